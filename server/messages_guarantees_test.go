package server_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

// The tests in this file prove the message guarantees of DESIGN.md.

func unthrottled(c *server.Config) { c.SendPerUser = server.Rate{} }

func (e *env) msgs(opts ...connect.ClientOption) parleyv1connect.MessagesServiceClient {
	return parleyv1connect.NewMessagesServiceClient(e.client, e.srv.URL, opts...)
}

// pair signs up two users who accept messages from anyone and opens their
// direct conversation with a first message from a.
func (e *env) pair(a, b string) (account, account, string) {
	e.t.Helper()
	x, y := e.signUp(a), e.signUp(b)
	for _, u := range []account{x, y} {
		if _, err := e.auth().UpdatePrivacy(u.ctx(), &parleyv1.UpdatePrivacyRequest{MessagePrivacy: parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE}); err != nil {
			e.t.Fatal(err)
		}
	}
	res, err := e.msgs().Send(x.ctx(), text(y.user.GetId(), "hello", ""))
	if err != nil {
		e.t.Fatal(err)
	}
	return x, y, res.GetConversationId()
}

// text builds a Send of body to a user (when to is a user id) or a conversation.
func text(userID, body, conversationID string) *parleyv1.SendRequest {
	req := &parleyv1.SendRequest{
		ClientMsgId: fmt.Sprintf("%d", rand.Int64()),
		Content:     &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: body}},
	}
	if conversationID != "" {
		req.Target = &parleyv1.SendRequest_ConversationId{ConversationId: conversationID}
	} else {
		req.Target = &parleyv1.SendRequest_UserId{UserId: userID}
	}
	return req
}

func TestConcurrentSendsGetGaplessSeqsEvenWhenTransactionsFail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, unthrottled)
	a, b, conv := e.pair("seq_a", "seq_b")
	const senders, each = 8, 150
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[int64]string{} // seq → client id
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := []account{a, b}[g%2]
			c := e.msgs(protocols[g%2].opts...)
			for i := range each {
				req := text("", fmt.Sprintf("m %d/%d", g, i), conv)
				req.ClientMsgId = fmt.Sprintf("g%d-%d", g, i)
				// Every third message is sent twice at once: one of the two
				// transactions allocates a seq and then fails on the
				// idempotency key, and must leave no gap.
				n := 1 + boolInt(i%3 == 0)
				var inner sync.WaitGroup
				for range n {
					inner.Add(1)
					go func() {
						defer inner.Done()
						res, err := c.Send(who.ctx(), req)
						if err != nil {
							t.Errorf("Send: %v", err)
							return
						}
						mu.Lock()
						defer mu.Unlock()
						if prev, ok := acked[res.GetSeq()]; ok && prev != req.ClientMsgId {
							t.Errorf("seq %d acked for %s and %s", res.GetSeq(), prev, req.ClientMsgId)
						}
						acked[res.GetSeq()] = req.ClientMsgId
					}()
				}
				inner.Wait()
			}
		}()
	}
	wg.Wait()
	want := int64(1 + senders*each) // the pair's first message is seq 1
	var n int64
	var minSeq, maxSeq int64
	err := e.db.Pool().QueryRow(context.Background(),
		"SELECT count(*), min(seq), max(seq) FROM messages WHERE conversation_id = $1", conv).Scan(&n, &minSeq, &maxSeq)
	if err != nil {
		t.Fatal(err)
	}
	if n != want || minSeq != 1 || maxSeq != want {
		t.Fatalf("stored %d messages with seqs %d..%d, want exactly 1..%d", n, minSeq, maxSeq, want)
	}
	if int64(len(acked)) != want-1 {
		t.Fatalf("acked %d distinct seqs, want %d", len(acked), want-1)
	}
	var lastSeq int64
	if err := e.db.Pool().QueryRow(context.Background(), "SELECT last_seq FROM conversations WHERE id = $1", conv).Scan(&lastSeq); err != nil {
		t.Fatal(err)
	}
	if lastSeq != want {
		t.Fatalf("conversation last_seq = %d, want %d", lastSeq, want)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestFiftyConcurrentRetriesStoreOneMessage(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		e := newEnv(t, unthrottled)
		a, _, conv := e.pair("retry_a", "retry_b")
		req := text("", "only once", conv)
		c := e.msgs(opts...)
		before := e.count(chatMessages)
		responses := make([]*parleyv1.SendResponse, 50)
		var wg sync.WaitGroup
		for i := range responses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.Send(a.ctx(), req)
				if err != nil {
					t.Errorf("retry %d: %v", i, err)
					return
				}
				responses[i] = res
			}()
		}
		wg.Wait()
		if got := e.count(chatMessages); got != before+1 {
			t.Fatalf("stored %d new messages, want 1", got-before)
		}
		for i, res := range responses[1:] {
			if diff := cmp.Diff(responses[0], res, protocmp.Transform()); diff != "" {
				t.Fatalf("response %d differs from response 0 (-first +this):\n%s", i+1, diff)
			}
		}
		if responses[0].GetSeq() != 2 {
			t.Fatalf("seq = %d, want 2", responses[0].GetSeq())
		}
	})
}

// receiveSeqs reads a stream until it has seen upTo in conv (or fails),
// returning the seqs of conv's message events in arrival order.
func receiveSeqs(t *testing.T, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse], conv string, upTo int64) []int64 {
	t.Helper()
	var got []int64
	for stream.Receive() {
		ev := stream.Msg()
		var msgs []*parleyv1.Message
		if m := ev.GetMessage(); m != nil {
			msgs = append(msgs, m)
		}
		if add := ev.GetConversation().GetAdded(); add != nil {
			msgs = append(msgs, add.GetLatestMessages()...)
		}
		for _, m := range msgs {
			if m.GetConversationId() == conv {
				got = append(got, m.GetSeq())
				if m.GetSeq() >= upTo {
					return got
				}
			}
		}
	}
	t.Fatalf("stream ended before seq %d: %v (got %d messages, last %v)", upTo, stream.Err(), len(got), got[max(len(got)-3, 0):])
	return nil
}

func TestSubscribeResumesGapFreeWhileMessagesKeepComing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, unthrottled)
	a, b, conv := e.pair("race_a", "race_b")
	ctx, stopPublisher := context.WithCancel(context.Background())
	defer stopPublisher()
	var (
		mu   sync.Mutex
		last int64 = 1
	)
	published := make(chan struct{})
	go func() {
		defer close(published)
		c := e.msgs()
		for ctx.Err() == nil {
			res, err := c.Send(a.ctx(), text("", "tick", conv))
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("publisher: %v", err)
				}
				return
			}
			mu.Lock()
			last = res.GetSeq()
			mu.Unlock()
		}
	}()

	c := e.msgs(connect.WithGRPC())
	const rounds = 40
	for round := range rounds {
		mu.Lock()
		now := last
		mu.Unlock()
		// A random cursor near the head: the backlog part varies from
		// nothing to a few pages while the live part races in behind it.
		cursor := max(now-rand.Int64N(300), 0)
		// Read until a message sent after the stream opened has arrived:
		// the backlog and the live tail must meet without gap or repeat.
		target := now + 3
		sctx, cancel := context.WithTimeout(bearerCtx(b), 20*time.Second)
		stream, err := c.Subscribe(sctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: cursor}}})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		got := receiveSeqs(t, stream, conv, target)
		cancel()
		stream.Close()
		for i, seq := range got {
			if want := cursor + 1 + int64(i); seq != want {
				t.Fatalf("round %d from cursor %d: seqs %v: position %d is %d, want %d", round, cursor, got, i, seq, want)
			}
		}
	}
	stopPublisher()
	<-published
}

// bearerCtx is a fresh context carrying the account's access token.
func bearerCtx(a account) context.Context { return a.ctx() }

func TestLogoutEndsTheSessionsStreamsAtOnce(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		e := newEnv(t)
		_, b, _ := e.pair("bye_a", "bye_b")
		ctx, cancel := context.WithTimeout(b.ctx(), 10*time.Second)
		defer cancel()
		stream, err := e.msgs(opts...).Subscribe(ctx, &parleyv1.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for stream.Receive() {
			if stream.Msg().GetHeartbeat() != nil {
				break // the backlog is done; the stream is live
			}
		}
		if _, err := e.auth(opts...).Logout(b.ctx(), &parleyv1.LogoutRequest{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for stream.Receive() {
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("stream ended %v after logout, want within 1s", elapsed)
		}
		if code := connect.CodeOf(stream.Err()); code != connect.CodeUnauthenticated {
			t.Fatalf("stream ended with %v, want Unauthenticated", stream.Err())
		}
		if errors.Is(stream.Err(), context.DeadlineExceeded) {
			t.Fatal("stream outlived logout until the test deadline")
		}
	})
}
