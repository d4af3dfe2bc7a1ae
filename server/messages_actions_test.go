package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/server"
)

func TestRecall(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		e := newEnv(t)
		a, b, conv := e.pair("recall_a", "recall_b")
		c := e.msgs(opts...)

		sent, err := c.Send(a.ctx(), text("", "oops", conv))
		if err != nil {
			t.Fatal(err)
		}
		t.Run("only the sender may recall", func(t *testing.T) {
			_, err := c.Recall(b.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: sent.GetSeq()})
			wantCode(t, err, connect.CodePermissionDenied)
		})
		t.Run("an outsider gets NotFound", func(t *testing.T) {
			out := e.signUp("recall_out", opts...)
			_, err := c.Recall(out.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: sent.GetSeq()})
			wantCode(t, err, connect.CodeNotFound)
		})
		t.Run("a seq beyond the log is NotFound", func(t *testing.T) {
			_, err := c.Recall(a.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: 99})
			wantCode(t, err, connect.CodeNotFound)
		})

		res, err := c.Recall(a.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: sent.GetSeq()})
		if err != nil {
			t.Fatalf("Recall: %v", err)
		}
		if got := res.GetRecall().GetSystem().GetRecall().GetSeq(); got != sent.GetSeq() {
			t.Fatalf("recall entry refers to seq %d, want %d", got, sent.GetSeq())
		}
		if res.GetRecall().GetSeq() != sent.GetSeq()+1 {
			t.Fatalf("recall entry has seq %d, want the next seq %d", res.GetRecall().GetSeq(), sent.GetSeq()+1)
		}
		page, err := c.ListMessages(b.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		var recalled *parleyv1.Message
		for _, m := range page.GetMessages() {
			if m.GetSeq() == sent.GetSeq() {
				recalled = m
			}
		}
		if recalled == nil || !recalled.GetRecalled() || recalled.GetText() != nil {
			t.Fatalf("recalled message as the peer sees it: %v, want recalled with no content", recalled)
		}
		t.Run("a second recall is refused", func(t *testing.T) {
			_, err := c.Recall(a.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: sent.GetSeq()})
			wantCode(t, err, connect.CodeFailedPrecondition)
		})
		t.Run("a system entry cannot be recalled", func(t *testing.T) {
			_, err := c.Recall(a.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: res.GetRecall().GetSeq()})
			wantCode(t, err, connect.CodeFailedPrecondition)
		})
	})
}

func TestRecallWindowCloses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.RecallWindow = 50 * time.Millisecond })
	a, _, conv := e.pair("late_a", "late_b")
	c := e.msgs()
	sent, err := c.Send(a.ctx(), text("", "too late", conv))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	before := e.count(chatMessages)
	_, err = c.Recall(a.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: sent.GetSeq()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if got := e.count(chatMessages); got != before {
		t.Fatalf("a refused recall wrote %d entries", got-before)
	}
}

func TestSendTypingReachesOnlyTheOthers(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		e := newEnv(t)
		a, b, conv := e.pair("typing_a", "typing_b")
		c := e.msgs(opts...)
		ctx, cancel := context.WithTimeout(b.ctx(), 10*time.Second)
		defer cancel()
		stream, err := c.Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for stream.Receive() && stream.Msg().GetHeartbeat() == nil {
		}
		if _, err := c.SendTyping(a.ctx(), &parleyv1.SendTypingRequest{ConversationId: conv, Typing: true}); err != nil {
			t.Fatal(err)
		}
		if !stream.Receive() {
			t.Fatalf("stream ended: %v", stream.Err())
		}
		ev := stream.Msg().GetTyping()
		if ev.GetUserId() != a.user.GetId() || !ev.GetTyping() || ev.GetConversationId() != conv {
			t.Fatalf("got %v, want a typing event from %s", stream.Msg(), a.user.GetId())
		}
		out := e.signUp("typing_out", opts...)
		_, err = c.SendTyping(out.ctx(), &parleyv1.SendTypingRequest{ConversationId: conv, Typing: true})
		wantCode(t, err, connect.CodeNotFound)
	})
}

func TestUpdateConversationSettings(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		e := newEnv(t)
		a, _, conv := e.pair("settings_a", "settings_b")
		_, _, other := e.pair("settings_c", "settings_d")
		c := e.msgs(opts...)
		res, err := c.UpdateConversationSettings(a.ctx(), &parleyv1.UpdateConversationSettingsRequest{ConversationId: conv, Muted: ptr(true), Pinned: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		if !res.GetConversation().GetMuted() || !res.GetConversation().GetPinned() {
			t.Fatalf("got muted=%v pinned=%v, want both", res.GetConversation().GetMuted(), res.GetConversation().GetPinned())
		}
		// Unset fields are kept.
		res, err = c.UpdateConversationSettings(a.ctx(), &parleyv1.UpdateConversationSettingsRequest{ConversationId: conv, Muted: ptr(false)})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetConversation().GetMuted() || !res.GetConversation().GetPinned() {
			t.Fatalf("got muted=%v pinned=%v, want unmuted and still pinned", res.GetConversation().GetMuted(), res.GetConversation().GetPinned())
		}
		// A newer conversation still lists after the pinned one.
		newer := e.signUp("settings_e", opts...)
		if _, err := c.Send(a.ctx(), text(newer.user.GetId(), "newer", "")); err != nil {
			t.Fatal(err)
		}
		list, err := c.ListConversations(a.ctx(), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if chats := a.chatOnly(list.GetConversations()); len(chats) != 2 || chats[0].GetId() != conv {
			t.Fatalf("pinned conversation is not listed first")
		}
		_, err = c.UpdateConversationSettings(a.ctx(), &parleyv1.UpdateConversationSettingsRequest{ConversationId: other, Pinned: ptr(true)})
		wantCode(t, err, connect.CodeNotFound)
	})
}

func ptr[T any](v T) *T { return &v }

func TestDeleteForMe(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		e := newEnv(t)
		a, b, conv := e.pair("del_a", "del_b")
		c := e.msgs(opts...)
		for i := range 4 {
			if _, err := c.Send(a.ctx(), text("", fmt.Sprint("m", i), conv)); err != nil {
				t.Fatal(err)
			} // seqs 2..5
		}
		if _, err := c.DeleteForMe(a.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, Seqs: []int64{3}}); err != nil {
			t.Fatal(err)
		}
		mine, err := c.ListMessages(a.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := c.ListMessages(b.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		if len(mine.GetMessages()) != 5 || len(theirs.GetMessages()) != 5 {
			t.Fatalf("got %d and %d messages, want 5 each (deleted entries keep their place)", len(mine.GetMessages()), len(theirs.GetMessages()))
		}
		if m := mine.GetMessages()[2]; m.GetSeq() != 3 || !m.GetDeleted() || m.GetText() != nil {
			t.Fatalf("deleter sees seq 3 as %v, want deleted without content", m)
		}
		if m := theirs.GetMessages()[2]; m.GetDeleted() || m.GetText().GetBody() == "" {
			t.Fatalf("peer sees seq 3 as %v, want it untouched", m)
		}

		res, err := c.DeleteForMe(a.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, UpToSeq: 4})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetConversation().GetClearedSeq() != 4 {
			t.Fatalf("cleared_seq = %d, want 4", res.GetConversation().GetClearedSeq())
		}
		// Clearing never moves back.
		res, err = c.DeleteForMe(a.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, UpToSeq: 2})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetConversation().GetClearedSeq() != 4 {
			t.Fatalf("cleared_seq moved back to %d", res.GetConversation().GetClearedSeq())
		}
		mine, err = c.ListMessages(a.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		if len(mine.GetMessages()) != 1 || mine.GetMessages()[0].GetSeq() != 5 {
			t.Fatalf("after clearing to 4 the history is %d messages, want only seq 5", len(mine.GetMessages()))
		}
		_, err = c.DeleteForMe(a.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, UpToSeq: 99})
		wantCode(t, err, connect.CodeInvalidArgument)
		out := e.signUp("del_out", opts...)
		_, err = c.DeleteForMe(out.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, Seqs: []int64{2}})
		wantCode(t, err, connect.CodeNotFound)
	})
}

// Unread counts are maintained with the messages; after a long random mix of
// sends, reads and recalls they must equal a recount from the rows.
func TestUnreadCountsMatchARecountAfterRandomTraffic(t *testing.T) {
	t.Parallel()
	e := newEnv(t, unthrottled)
	a, b, conv := e.pair("unread_a", "unread_b")
	c := e.msgs()
	users := []account{a, b}
	var lastOf [2]int64
	for range 300 {
		i := rand.IntN(2)
		switch op := rand.IntN(10); {
		case op < 6:
			res, err := c.Send(users[i].ctx(), text("", "x", conv))
			if err != nil {
				t.Fatal(err)
			}
			lastOf[i] = res.GetSeq()
		case op < 9:
			if _, err := c.MarkRead(users[i].ctx(), &parleyv1.MarkReadRequest{ConversationId: conv, Seq: 1 + rand.Int64N(400)}); err != nil {
				t.Fatal(err)
			}
		default:
			if lastOf[i] > 0 {
				_, err := c.Recall(users[i].ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: lastOf[i]})
				if err != nil && connect.CodeOf(err) != connect.CodeFailedPrecondition {
					t.Fatal(err)
				}
			}
		}
	}
	for _, u := range users {
		list, err := c.ListConversations(u.ctx(), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := list.GetConversations()[0].GetUnreadCount()
		var want int64
		err = e.db.Pool().QueryRow(context.Background(), `
			SELECT count(*) FROM messages msg JOIN members m ON m.conversation_id = msg.conversation_id
			WHERE m.user_id = $1 AND msg.conversation_id = $2 AND msg.seq > m.read_seq`, u.user.GetId(), conv).Scan(&want)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: unread_count = %d, recount from rows = %d", u.user.GetUsername(), got, want)
		}
	}
}
