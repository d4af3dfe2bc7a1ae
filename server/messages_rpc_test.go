package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func (e *env) rpcMessages(opts ...connect.ClientOption) parleyv1connect.MessagesServiceClient {
	return parleyv1connect.NewMessagesServiceClient(e.client, e.srv.URL, opts...)
}

// rpcLoose lifts the send rate limit for tests that send a lot.
func rpcLoose(c *server.Config) { c.SendPerUser = server.Rate{Burst: 100000, Per: time.Second} }

var rpcMsgCounter atomic.Int64

// rpcMsgID returns a client_msg_id no other Send in the process uses.
func rpcMsgID() string { return fmt.Sprintf("rpc-%d", rpcMsgCounter.Add(1)) }

// rpcToUser is a text Send to a user.
func rpcToUser(userID, body string) *parleyv1.SendRequest {
	return &parleyv1.SendRequest{
		ClientMsgId: rpcMsgID(),
		Target:      &parleyv1.SendRequest_UserId{UserId: userID},
		Content:     &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: body}},
	}
}

// rpcToConv is a text Send to a conversation.
func rpcToConv(convID, body string) *parleyv1.SendRequest {
	return &parleyv1.SendRequest{
		ClientMsgId: rpcMsgID(),
		Target:      &parleyv1.SendRequest_ConversationId{ConversationId: convID},
		Content:     &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: body}},
	}
}

// rpcSend sends req as from and fails t on error.
func rpcSend(t testing.TB, c parleyv1connect.MessagesServiceClient, from account, req *parleyv1.SendRequest) *parleyv1.SendResponse {
	t.Helper()
	res, err := c.Send(from.ctx(), req)
	if err != nil {
		t.Fatalf("Send(%s): %v", from.user.GetUsername(), err)
	}
	return res
}

// rpcPrivacy sets a's message privacy.
func rpcPrivacy(t testing.TB, e *env, a account, p parleyv1.MessagePrivacy, opts ...connect.ClientOption) {
	t.Helper()
	if _, err := e.auth(opts...).UpdatePrivacy(a.ctx(), &parleyv1.UpdatePrivacyRequest{MessagePrivacy: p}); err != nil {
		t.Fatalf("UpdatePrivacy(%s, %v): %v", a.user.GetUsername(), p, err)
	}
}

// rpcThread has from send n messages "m1".."mn" to to, whose privacy is set
// to EVERYONE first, and returns the conversation id.
func rpcThread(t testing.TB, e *env, c parleyv1connect.MessagesServiceClient, from, to account, n int, opts ...connect.ClientOption) string {
	t.Helper()
	rpcPrivacy(t, e, to, parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE, opts...)
	var conv string
	for i := 1; i <= n; i++ {
		res := rpcSend(t, c, from, rpcToUser(to.user.GetId(), fmt.Sprintf("m%d", i)))
		if res.GetSeq() != int64(i) {
			t.Fatalf("message %d got seq %d", i, res.GetSeq())
		}
		conv = res.GetConversationId()
	}
	return conv
}

func rpcSeqs(msgs []*parleyv1.Message) []int64 {
	out := []int64{}
	for _, m := range msgs {
		out = append(out, m.GetSeq())
	}
	return out
}

func rpcSeqRange(from, to int64) []int64 {
	out := []int64{}
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestSendToAUserCreatesTheDirectConversationAndNumbersMessages(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)

		first := rpcSend(t, c, alice, rpcToUser(bob.user.GetId(), "hello"))
		if first.GetConversationId() == "" || first.GetMessageId() == "" || first.GetCreateTime() == nil {
			t.Fatalf("ack lacks conversation_id, message_id or create_time: %v", first)
		}
		if first.GetSeq() != 1 {
			t.Errorf("first message got seq %d, want 1", first.GetSeq())
		}
		if got := first.GetMessage().GetText().GetBody(); got != "hello" {
			t.Errorf("ack message text got %q, want %q", got, "hello")
		}
		if got := first.GetMessage().GetSenderId(); got != alice.user.GetId() {
			t.Errorf("ack sender got %q, want %q", got, alice.user.GetId())
		}

		second := rpcSend(t, c, alice, rpcToUser(bob.user.GetId(), "again"))
		if second.GetConversationId() != first.GetConversationId() || second.GetSeq() != 2 {
			t.Errorf("second send by user_id got (%s, %d), want (%s, 2)", second.GetConversationId(), second.GetSeq(), first.GetConversationId())
		}
		third := rpcSend(t, c, alice, rpcToConv(first.GetConversationId(), "by id"))
		if third.GetConversationId() != first.GetConversationId() || third.GetSeq() != 3 {
			t.Errorf("send by conversation_id got (%s, %d), want (%s, 3)", third.GetConversationId(), third.GetSeq(), first.GetConversationId())
		}
		reply := rpcSend(t, c, bob, rpcToUser(alice.user.GetId(), "hi"))
		if reply.GetConversationId() != first.GetConversationId() || reply.GetSeq() != 4 {
			t.Errorf("peer's reply by user_id got (%s, %d), want (%s, 4)", reply.GetConversationId(), reply.GetSeq(), first.GetConversationId())
		}
		if got := e.count(chatConversations); got != 1 {
			t.Errorf("got %d conversations, want 1", got)
		}
		if got := e.count(chatMessages); got != 4 {
			t.Errorf("got %d messages, want 4", got)
		}
	})
}

func TestSendRejectsBadRequestsAndWritesNothing(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
		conv := rpcSend(t, c, alice, rpcToUser(bob.user.GetId(), "hello")).GetConversationId()
		mediaID := newUUID()

		tests := []struct {
			name string
			req  *parleyv1.SendRequest
			want connect.Code
		}{
			{"sending to yourself is invalid", rpcToUser(alice.user.GetId(), "me"), connect.CodeInvalidArgument},
			{"sending to an unknown user is not found", rpcToUser(newUUID(), "who"), connect.CodeNotFound},
			{"sending to an unknown conversation is not found", rpcToConv(newUUID(), "where"), connect.CodeNotFound},
			{"an image of unknown media is not found", &parleyv1.SendRequest{ClientMsgId: rpcMsgID(), Target: &parleyv1.SendRequest_ConversationId{ConversationId: conv},
				Content: &parleyv1.SendRequest_Image{Image: &parleyv1.ImageContent{MediaId: mediaID}}}, connect.CodeNotFound},
			{"a voice note of unknown media is not found", &parleyv1.SendRequest{ClientMsgId: rpcMsgID(), Target: &parleyv1.SendRequest_UserId{UserId: bob.user.GetId()},
				Content: &parleyv1.SendRequest_Voice{Voice: &parleyv1.VoiceContent{MediaId: mediaID}}}, connect.CodeNotFound},
			{"a video of unknown media is not found", &parleyv1.SendRequest{ClientMsgId: rpcMsgID(), Target: &parleyv1.SendRequest_ConversationId{ConversationId: conv},
				Content: &parleyv1.SendRequest_Video{Video: &parleyv1.VideoContent{MediaId: mediaID}}}, connect.CodeNotFound},
			{"a file of unknown media is not found", &parleyv1.SendRequest{ClientMsgId: rpcMsgID(), Target: &parleyv1.SendRequest_ConversationId{ConversationId: conv},
				Content: &parleyv1.SendRequest_File{File: &parleyv1.FileContent{MediaId: mediaID}}}, connect.CodeNotFound},
			{"an empty client_msg_id is invalid", func() *parleyv1.SendRequest {
				r := rpcToConv(conv, "x")
				r.ClientMsgId = ""
				return r
			}(), connect.CodeInvalidArgument},
			{"an empty text is invalid", rpcToConv(conv, ""), connect.CodeInvalidArgument},
			{"a text over 8192 bytes is invalid", rpcToConv(conv, strings.Repeat("é", 4097)), connect.CodeInvalidArgument},
			{"a reply beyond last_seq is invalid", func() *parleyv1.SendRequest {
				r := rpcToConv(conv, "re")
				r.ReplyToSeq = 2
				return r
			}(), connect.CodeInvalidArgument},
			{"mentions in a direct conversation are invalid", func() *parleyv1.SendRequest {
				r := rpcToConv(conv, "@bob")
				r.MentionUserIds = []string{bob.user.GetId()}
				return r
			}(), connect.CodeInvalidArgument},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := e.in(t)
				messages, conversations := e.count(chatMessages), e.count(chatConversations)
				_, err := c.Send(alice.ctx(), tt.req)
				wantCode(t, err, tt.want)
				if got := e.count(chatMessages); got != messages {
					t.Errorf("got %d messages after a refused Send, want %d", got, messages)
				}
				if got := e.count(chatConversations); got != conversations {
					t.Errorf("got %d conversations after a refused Send, want %d", got, conversations)
				}
			})
		}

		// The boundaries themselves are accepted.
		ok := rpcToConv(conv, strings.Repeat("é", 4096))
		ok.ReplyToSeq = 1
		if res := rpcSend(t, c, alice, ok); res.GetSeq() != 2 {
			t.Errorf("8192-byte reply got seq %d, want 2", res.GetSeq())
		}
	})
}

func TestSendRespectsTheRecipientsPrivacy(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		t.Run("a stranger may send three messages until the recipient replies", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, rpcLoose)
			c := e.rpcMessages(opts...)
			alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
			var conv string
			for i := range 3 {
				conv = rpcSend(t, c, alice, rpcToUser(bob.user.GetId(), fmt.Sprint(i))).GetConversationId()
			}
			_, err := c.Send(alice.ctx(), rpcToUser(bob.user.GetId(), "fourth"))
			wantCode(t, err, connect.CodePermissionDenied)
			_, err = c.Send(alice.ctx(), rpcToConv(conv, "fourth"))
			wantCode(t, err, connect.CodePermissionDenied)
			if got := e.count(chatMessages); got != 3 {
				t.Errorf("got %d messages, want 3", got)
			}
			if res := rpcSend(t, c, bob, rpcToConv(conv, "reply")); res.GetSeq() != 4 {
				t.Errorf("reply got seq %d, want 4", res.GetSeq())
			}
			if res := rpcSend(t, c, alice, rpcToConv(conv, "fourth")); res.GetSeq() != 5 {
				t.Errorf("fourth message after the reply got seq %d, want 5", res.GetSeq())
			}
		})
		t.Run("friends only refuses a stranger", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, rpcLoose)
			c := e.rpcMessages(opts...)
			alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
			rpcPrivacy(t, e, bob, parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY, opts...)
			_, err := c.Send(alice.ctx(), rpcToUser(bob.user.GetId(), "hi"))
			wantCode(t, err, connect.CodePermissionDenied)
			if got := e.count(chatMessages); got != 0 {
				t.Errorf("got %d messages, want 0", got)
			}
			// The refused first message leaves no empty conversation behind.
			if got := e.count(chatConversations); got != 0 {
				t.Errorf("got %d conversations, want 0", got)
			}
		})
		t.Run("everyone admits any number of messages", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, rpcLoose)
			c := e.rpcMessages(opts...)
			alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
			rpcThread(t, e, c, alice, bob, 6, opts...)
			if got := e.count(chatMessages); got != 6 {
				t.Errorf("got %d messages, want 6", got)
			}
		})
	})
}

func TestOutsidersAndUnknownConversationsAreNotFound(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob, carol := e.signUp("alice", opts...), e.signUp("bob", opts...), e.signUp("carol", opts...)
		conv := rpcThread(t, e, c, alice, bob, 2, opts...)

		calls := []struct {
			name string
			call func(ctx context.Context, conv string) (any, error)
		}{
			{"Send", func(ctx context.Context, conv string) (any, error) { return c.Send(ctx, rpcToConv(conv, "intrude")) }},
			{"ListMessages", func(ctx context.Context, conv string) (any, error) {
				return c.ListMessages(ctx, &parleyv1.ListMessagesRequest{ConversationId: conv})
			}},
			{"GetConversation", func(ctx context.Context, conv string) (any, error) {
				return c.GetConversation(ctx, &parleyv1.GetConversationRequest{ConversationId: conv})
			}},
			{"MarkRead", func(ctx context.Context, conv string) (any, error) {
				return c.MarkRead(ctx, &parleyv1.MarkReadRequest{ConversationId: conv, Seq: 1})
			}},
			{"GetReadReceipts", func(ctx context.Context, conv string) (any, error) {
				return c.GetReadReceipts(ctx, &parleyv1.GetReadReceiptsRequest{ConversationId: conv, Seq: 1})
			}},
		}
		for _, tt := range calls {
			t.Run(tt.name+" by an outsider is not found", func(t *testing.T) {
				res, err := tt.call(carol.ctx(), conv)
				wantCode(t, err, connect.CodeNotFound)
				if err == nil {
					t.Errorf("got response %v, want none", res)
				}
			})
			t.Run(tt.name+" on a non-existent conversation is not found", func(t *testing.T) {
				_, err := tt.call(carol.ctx(), newUUID())
				wantCode(t, err, connect.CodeNotFound)
			})
			t.Run(tt.name+" without a token is unauthenticated", func(t *testing.T) {
				_, err := tt.call(context.Background(), conv)
				wantCode(t, err, connect.CodeUnauthenticated)
			})
		}
		if got := e.count(chatMessages); got != 2 {
			t.Errorf("got %d messages, want 2", got)
		}

		// The pair's state is untouched by the outsider.
		got, err := c.GetConversation(alice.ctx(), &parleyv1.GetConversationRequest{ConversationId: conv})
		if err != nil {
			t.Fatalf("GetConversation: %v", err)
		}
		if got.GetConversation().GetLastSeq() != 2 || got.GetConversation().GetPeerReadSeq() != 0 {
			t.Errorf("got last_seq %d, peer_read_seq %d, want 2, 0", got.GetConversation().GetLastSeq(), got.GetConversation().GetPeerReadSeq())
		}

		// The outsider's own views show nothing of it.
		list, err := c.ListConversations(carol.ctx(), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatalf("ListConversations: %v", err)
		}
		if n := len(carol.chatOnly(list.GetConversations())); n != 0 {
			t.Errorf("outsider lists %d conversations, want 0", n)
		}
		sync, err := c.Sync(carol.ctx(), &parleyv1.SyncRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv}}})
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		want := &parleyv1.SyncResponse{RemovedConversationIds: []string{conv}}
		if diff := cmp.Diff(want, carol.chatSync(sync), protocmp.Transform()); diff != "" {
			t.Errorf("outsider's Sync (-want +got):\n%s", diff)
		}

		for name, call := range map[string]func() error{
			"Sync": func() error { _, err := c.Sync(context.Background(), &parleyv1.SyncRequest{}); return err },
			"ListConversations": func() error {
				_, err := c.ListConversations(context.Background(), &parleyv1.ListConversationsRequest{})
				return err
			},
			"Subscribe": func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := c.Subscribe(ctx, &parleyv1.SubscribeRequest{})
				if err != nil {
					return err
				}
				defer s.Close()
				for s.Receive() {
				}
				return s.Err()
			},
		} {
			t.Run(name+" without a token is unauthenticated", func(t *testing.T) {
				wantCode(t, call(), connect.CodeUnauthenticated)
			})
		}
	})
}

func TestListMessagesPagesThroughHistory(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
		conv := rpcThread(t, e, c, alice, bob, 7, opts...)

		list := func(t *testing.T, who account, req *parleyv1.ListMessagesRequest) *parleyv1.ListMessagesResponse {
			t.Helper()
			req.ConversationId = conv
			res, err := c.ListMessages(who.ctx(), req)
			if err != nil {
				t.Fatalf("ListMessages(%v): %v", req, err)
			}
			return res
		}

		t.Run("the default is the newest page in ascending order", func(t *testing.T) {
			for _, who := range []account{alice, bob} {
				res := list(t, who, &parleyv1.ListMessagesRequest{})
				if diff := cmp.Diff(rpcSeqRange(1, 7), rpcSeqs(res.GetMessages())); diff != "" || res.GetHasMore() {
					t.Errorf("got has_more %v, want false; seqs (-want +got):\n%s", res.GetHasMore(), diff)
				}
				if got := res.GetMessages()[6].GetText().GetBody(); got != "m7" {
					t.Errorf("seq 7 text got %q, want m7", got)
				}
				res = list(t, who, &parleyv1.ListMessagesRequest{Limit: 3})
				if diff := cmp.Diff([]int64{5, 6, 7}, rpcSeqs(res.GetMessages())); diff != "" || !res.GetHasMore() {
					t.Errorf("got has_more %v, want true; seqs (-want +got):\n%s", res.GetHasMore(), diff)
				}
			}
		})
		t.Run("before_seq pages back over every seq once", func(t *testing.T) {
			res := list(t, bob, &parleyv1.ListMessagesRequest{Limit: 3})
			got := rpcSeqs(res.GetMessages())
			for pages := 1; res.GetHasMore(); pages++ {
				if pages > 5 {
					t.Fatal("paging does not end")
				}
				oldest := res.GetMessages()[0].GetSeq()
				res = list(t, bob, &parleyv1.ListMessagesRequest{Limit: 3, Position: &parleyv1.ListMessagesRequest_BeforeSeq{BeforeSeq: oldest}})
				got = append(rpcSeqs(res.GetMessages()), got...)
			}
			if diff := cmp.Diff(rpcSeqRange(1, 7), got); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
		})
		t.Run("after_seq pages forward over every seq once", func(t *testing.T) {
			var got []int64
			after := int64(0)
			for pages := 0; ; pages++ {
				if pages > 5 {
					t.Fatal("paging does not end")
				}
				res := list(t, alice, &parleyv1.ListMessagesRequest{Limit: 3, Position: &parleyv1.ListMessagesRequest_AfterSeq{AfterSeq: after}})
				got = append(got, rpcSeqs(res.GetMessages())...)
				if !res.GetHasMore() {
					break
				}
				after = res.GetMessages()[len(res.GetMessages())-1].GetSeq()
			}
			if diff := cmp.Diff(rpcSeqRange(1, 7), got); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
		})
		t.Run("a limit over 200 is invalid", func(t *testing.T) {
			_, err := c.ListMessages(alice.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv, Limit: 201})
			wantCode(t, err, connect.CodeInvalidArgument)
		})
	})
}

func TestListConversationsShowsPeersPreviewsAndUnreadCounts(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob, carol := e.signUp("alice", opts...), e.signUp("bob", opts...), e.signUp("carol", opts...)
		withAlice := rpcThread(t, e, c, alice, bob, 3, opts...)
		withCarol := rpcSend(t, c, carol, rpcToUser(bob.user.GetId(), "hey bob")).GetConversationId()

		res, err := c.ListConversations(bob.ctx(), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatalf("ListConversations: %v", err)
		}
		convs := bob.chatOnly(res.GetConversations())
		if len(convs) != 2 || res.GetNextPageToken() != "" {
			t.Fatalf("got %d conversations and next_page_token %q, want 2 and none", len(convs), res.GetNextPageToken())
		}
		if convs[0].GetId() != withCarol || convs[1].GetId() != withAlice {
			t.Fatalf("got order %s, %s, want newest first: %s, %s", convs[0].GetId(), convs[1].GetId(), withCarol, withAlice)
		}
		fromAlice := convs[1]
		if diff := cmp.Diff(alice.user, fromAlice.GetPeer(), protocmp.Transform()); diff != "" {
			t.Errorf("peer (-want +got):\n%s", diff)
		}
		if fromAlice.GetTitle() != "User alice" || fromAlice.GetKind() != parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT || fromAlice.GetMemberCount() != 2 {
			t.Errorf("got title %q, kind %v, member_count %d, want %q, DIRECT, 2", fromAlice.GetTitle(), fromAlice.GetKind(), fromAlice.GetMemberCount(), "User alice")
		}
		if fromAlice.GetLastSeq() != 3 || fromAlice.GetReadSeq() != 0 || fromAlice.GetUnreadCount() != 3 {
			t.Errorf("recipient got last_seq %d, read_seq %d, unread_count %d, want 3, 0, 3", fromAlice.GetLastSeq(), fromAlice.GetReadSeq(), fromAlice.GetUnreadCount())
		}
		if lm := fromAlice.GetLastMessage(); lm.GetSeq() != 3 || lm.GetText().GetBody() != "m3" || lm.GetSenderId() != alice.user.GetId() {
			t.Errorf("last_message got %v, want seq 3 %q from alice", lm, "m3")
		}
		if convs[0].GetUnreadCount() != 1 || convs[0].GetPeer().GetId() != carol.user.GetId() {
			t.Errorf("carol's conversation got unread_count %d, peer %s, want 1, carol", convs[0].GetUnreadCount(), convs[0].GetPeer().GetId())
		}

		mine, err := c.ListConversations(alice.ctx(), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatalf("ListConversations: %v", err)
		}
		if len(alice.chatOnly(mine.GetConversations())) != 1 {
			t.Fatalf("sender got %d conversations, want 1", len(alice.chatOnly(mine.GetConversations())))
		}
		if s := alice.chatOnly(mine.GetConversations())[0]; s.GetReadSeq() != 3 || s.GetUnreadCount() != 0 || s.GetPeer().GetId() != bob.user.GetId() || s.GetTitle() != "User bob" {
			t.Errorf("sender got read_seq %d, unread_count %d, peer %s, title %q, want 3, 0, bob, %q", s.GetReadSeq(), s.GetUnreadCount(), s.GetPeer().GetId(), s.GetTitle(), "User bob")
		}

		t.Run("pages of one walk every conversation", func(t *testing.T) {
			var ids []string
			token := ""
			for pages := 0; ; pages++ {
				if pages > 4 {
					t.Fatal("paging does not end")
				}
				page, err := c.ListConversations(bob.ctx(), &parleyv1.ListConversationsRequest{PageSize: 1, PageToken: token})
				if err != nil {
					t.Fatalf("ListConversations: %v", err)
				}
				if len(page.GetConversations()) != 1 {
					t.Fatalf("page %d has %d conversations, want 1", pages, len(page.GetConversations()))
				}
				if id := page.GetConversations()[0].GetId(); id != bob.accountConv {
					ids = append(ids, id)
				}
				if token = page.GetNextPageToken(); token == "" {
					break
				}
			}
			if diff := cmp.Diff([]string{withCarol, withAlice}, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	})
}

func TestMarkReadMovesForwardOnly(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
		conv := rpcThread(t, e, c, alice, bob, 3, opts...)

		markRead := func(seq, wantRead, wantUnread int64) {
			t.Helper()
			res, err := c.MarkRead(bob.ctx(), &parleyv1.MarkReadRequest{ConversationId: conv, Seq: seq})
			if err != nil {
				t.Fatalf("MarkRead(%d): %v", seq, err)
			}
			if res.GetReadSeq() != wantRead || res.GetUnreadCount() != wantUnread {
				t.Errorf("MarkRead(%d) got read_seq %d, unread_count %d, want %d, %d", seq, res.GetReadSeq(), res.GetUnreadCount(), wantRead, wantUnread)
			}
			got, err := c.GetConversation(bob.ctx(), &parleyv1.GetConversationRequest{ConversationId: conv})
			if err != nil {
				t.Fatalf("GetConversation: %v", err)
			}
			if got.GetConversation().GetReadSeq() != wantRead || got.GetConversation().GetUnreadCount() != wantUnread {
				t.Errorf("after MarkRead(%d) got read_seq %d, unread_count %d, want %d, %d", seq,
					got.GetConversation().GetReadSeq(), got.GetConversation().GetUnreadCount(), wantRead, wantUnread)
			}
		}
		receipts := func(seq int64, want *parleyv1.GetReadReceiptsResponse) {
			t.Helper()
			got, err := c.GetReadReceipts(alice.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: conv, Seq: seq})
			if err != nil {
				t.Fatalf("GetReadReceipts(%d): %v", seq, err)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("GetReadReceipts(%d) (-want +got):\n%s", seq, diff)
			}
		}

		receipts(1, &parleyv1.GetReadReceiptsResponse{UnreadMemberCount: 1})
		markRead(1, 1, 2)
		receipts(1, &parleyv1.GetReadReceiptsResponse{ReaderIds: []string{bob.user.GetId()}})
		receipts(2, &parleyv1.GetReadReceiptsResponse{UnreadMemberCount: 1})
		markRead(3, 3, 0)
		markRead(2, 3, 0)
		receipts(3, &parleyv1.GetReadReceiptsResponse{ReaderIds: []string{bob.user.GetId()}})

		// Beyond last_seq is taken as last_seq: the next message is unread.
		markRead(100, 3, 0)
		rpcSend(t, c, alice, rpcToConv(conv, "m4"))
		markRead(2, 3, 1)
		markRead(100, 4, 0)

		got, err := c.GetConversation(alice.ctx(), &parleyv1.GetConversationRequest{ConversationId: conv})
		if err != nil {
			t.Fatalf("GetConversation: %v", err)
		}
		if got.GetConversation().GetPeerReadSeq() != 4 {
			t.Errorf("sender got peer_read_seq %d, want 4", got.GetConversation().GetPeerReadSeq())
		}
		_, err = c.GetReadReceipts(alice.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: conv, Seq: 5})
		wantCode(t, err, connect.CodeNotFound)
		// Only the sender may see who read a message.
		_, err = c.GetReadReceipts(bob.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: conv, Seq: 1})
		wantCode(t, err, connect.CodePermissionDenied)
	})
}

func TestSyncReturnsWhatFollowsTheCursors(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
		conv := rpcThread(t, e, c, alice, bob, 5, opts...)

		sync := func(t *testing.T, req *parleyv1.SyncRequest) *parleyv1.SyncResponse {
			t.Helper()
			res, err := c.Sync(bob.ctx(), req)
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			return bob.chatSync(res)
		}
		cursor := func(seq int64) []*parleyv1.Cursor {
			return []*parleyv1.Cursor{{ConversationId: conv, Seq: seq}}
		}
		// withAccount adds bob's account conversation, at its end, to cursors.
		acc, err := c.GetConversation(bob.ctx(), &parleyv1.GetConversationRequest{ConversationId: bob.accountConv})
		if err != nil {
			t.Fatalf("GetConversation(account): %v", err)
		}
		withAccount := func(cursors []*parleyv1.Cursor) []*parleyv1.Cursor {
			return append(cursors, &parleyv1.Cursor{ConversationId: bob.accountConv, Seq: acc.GetConversation().GetLastSeq()})
		}

		t.Run("without cursors every conversation comes with its latest messages", func(t *testing.T) {
			res := sync(t, &parleyv1.SyncRequest{})
			if diff := cmp.Diff(rpcSeqRange(1, 5), rpcSeqs(res.GetMessages())); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
			if len(res.GetConversations()) != 1 || res.GetConversations()[0].GetId() != conv || res.GetConversations()[0].GetUnreadCount() != 5 {
				t.Errorf("got conversations %v, want %s with 5 unread", res.GetConversations(), conv)
			}
			if diff := cmp.Diff(cursor(5), res.GetPositions(), protocmp.Transform()); diff != "" || res.GetHasMore() {
				t.Errorf("got has_more %v; positions (-want +got):\n%s", res.GetHasMore(), diff)
			}
		})
		t.Run("a cursor at seq 2 returns seqs 3 to 5", func(t *testing.T) {
			res := sync(t, &parleyv1.SyncRequest{Cursors: withAccount(cursor(2))})
			if diff := cmp.Diff([]int64{3, 4, 5}, rpcSeqs(res.GetMessages())); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(cursor(5), res.GetPositions(), protocmp.Transform()); diff != "" || res.GetHasMore() {
				t.Errorf("got has_more %v; positions (-want +got):\n%s", res.GetHasMore(), diff)
			}
		})
		t.Run("a limit pages with has_more until done", func(t *testing.T) {
			res := sync(t, &parleyv1.SyncRequest{Cursors: withAccount(cursor(2)), Limit: 2})
			if diff := cmp.Diff([]int64{3, 4}, rpcSeqs(res.GetMessages())); diff != "" || !res.GetHasMore() {
				t.Errorf("got has_more %v, want true; seqs (-want +got):\n%s", res.GetHasMore(), diff)
			}
			if diff := cmp.Diff(cursor(4), res.GetPositions(), protocmp.Transform()); diff != "" {
				t.Errorf("positions (-want +got):\n%s", diff)
			}
			res = sync(t, &parleyv1.SyncRequest{Cursors: withAccount(res.GetPositions()), Limit: 2})
			if diff := cmp.Diff([]int64{5}, rpcSeqs(res.GetMessages())); diff != "" || res.GetHasMore() {
				t.Errorf("got has_more %v, want false; seqs (-want +got):\n%s", res.GetHasMore(), diff)
			}
			res = sync(t, &parleyv1.SyncRequest{Cursors: withAccount(cursor(5)), Limit: 2})
			if diff := cmp.Diff(&parleyv1.SyncResponse{}, res, protocmp.Transform()); diff != "" {
				t.Errorf("Sync at the end (-want +got):\n%s", diff)
			}
		})
		t.Run("an unknown conversation comes back as removed", func(t *testing.T) {
			unknown := newUUID()
			res := sync(t, &parleyv1.SyncRequest{Cursors: append(cursor(5), &parleyv1.Cursor{ConversationId: unknown, Seq: 3})})
			if diff := cmp.Diff([]string{unknown}, res.GetRemovedConversationIds()); diff != "" {
				t.Errorf("removed_conversation_ids (-want +got):\n%s", diff)
			}
			if len(res.GetMessages()) != 0 || len(res.GetConversations()) != 0 {
				t.Errorf("got %d messages and %d conversations, want none", len(res.GetMessages()), len(res.GetConversations()))
			}
		})
	})
}

// rpcReceive returns the next event of stream, failing t if the stream ends.
func rpcReceive(t testing.TB, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse]) *parleyv1.SubscribeResponse {
	t.Helper()
	if !stream.Receive() {
		t.Fatalf("stream ended: %v", stream.Err())
	}
	return stream.Msg()
}

// rpcSubscribe opens a stream for a with no cursors and reads its backlog up
// to the first heartbeat, which it returns with the events before it, leaving
// out those about a's account conversation.
func rpcSubscribe(t testing.TB, c parleyv1connect.MessagesServiceClient, a account) (*connect.ServerStreamForClient[parleyv1.SubscribeResponse], []*parleyv1.SubscribeResponse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(a.ctx(), 20*time.Second)
	stream, err := c.Subscribe(ctx, &parleyv1.SubscribeRequest{})
	if err != nil {
		cancel()
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		stream.Close()
	})
	var backlog []*parleyv1.SubscribeResponse
	for {
		ev := rpcReceive(t, stream)
		if !a.aboutAccount(ev) {
			backlog = append(backlog, ev)
		}
		if ev.GetHeartbeat() != nil {
			return stream, backlog
		}
	}
}

func TestSubscribeDeliversTheBacklogThenLiveEvents(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c := e.rpcMessages(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)
		conv := rpcThread(t, e, c, alice, bob, 2, opts...)

		bobs, backlog := rpcSubscribe(t, c, bob)
		if len(backlog) != 2 {
			t.Fatalf("got backlog %v, want an added conversation then a heartbeat", backlog)
		}
		added := backlog[0].GetConversation().GetAdded()
		if added.GetConversation().GetId() != conv || added.GetConversation().GetLastSeq() != 2 || added.GetConversation().GetUnreadCount() != 2 {
			t.Errorf("got added conversation %v, want %s at last_seq 2 with 2 unread", added.GetConversation(), conv)
		}
		if diff := cmp.Diff([]int64{1, 2}, rpcSeqs(added.GetLatestMessages())); diff != "" {
			t.Errorf("latest_messages seqs (-want +got):\n%s", diff)
		}
		if hb := backlog[1].GetHeartbeat(); hb.GetServerTime() == nil || hb.GetInterval() == nil {
			t.Errorf("heartbeat got %v, want server_time and interval", hb)
		}
		alices, _ := rpcSubscribe(t, c, alice)

		sent := rpcSend(t, c, alice, rpcToConv(conv, "live"))
		ev := rpcReceive(t, bobs)
		for ev.GetPresence() != nil { // alice coming online
			ev = rpcReceive(t, bobs)
		}
		if diff := cmp.Diff(sent.GetMessage(), ev.GetMessage(), protocmp.Transform()); diff != "" {
			t.Fatalf("live message (-want +got):\n%s", diff)
		}

		if _, err := c.MarkRead(bob.ctx(), &parleyv1.MarkReadRequest{ConversationId: conv, Seq: 3}); err != nil {
			t.Fatalf("MarkRead: %v", err)
		}
		want := &parleyv1.ReadEvent{ConversationId: conv, UserId: bob.user.GetId(), Seq: 3}
		for {
			ev := rpcReceive(t, alices)
			if ev.GetHeartbeat() != nil || ev.GetPresence() != nil {
				continue
			}
			if m := ev.GetMessage(); m != nil {
				if m.GetSeq() != 3 {
					t.Fatalf("alice got message seq %d, want only her own seq 3", m.GetSeq())
				}
				continue
			}
			if diff := cmp.Diff(want, ev.GetRead(), protocmp.Transform()); diff != "" {
				t.Fatalf("alice's event (-want read +got):\n%s\n(event %v)", diff, ev)
			}
			break
		}
	})
}
