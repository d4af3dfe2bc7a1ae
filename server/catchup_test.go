package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/server"
)

// seedConversation has a send n more messages into conv, from 8 concurrent
// senders, and returns the conversation's last seq.
func seedConversation(t testing.TB, e *env, a account, conv string, n int) int64 {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last int64
		fail error
	)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				res, err := e.msgs().Send(a.ctx(), text("", fmt.Sprintf("seed %d", i), conv))
				mu.Lock()
				if err != nil && fail == nil {
					fail = err
				}
				last = max(last, res.GetSeq())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if fail != nil {
		t.Fatal(fail)
	}
	return last
}

// readEntries reads a stream until it has delivered conv's entries up to
// last, checking that they come exactly once and in order after from, and
// returns how many events carried them.
func readEntries(t testing.TB, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse], conv string, from, last int64) (events int) {
	t.Helper()
	seq := from
	take := func(m *parleyv1.Message) {
		if m.GetConversationId() != conv {
			return
		}
		if m.GetSeq() != seq+1 {
			t.Fatalf("got seq %d after %d", m.GetSeq(), seq)
		}
		seq = m.GetSeq()
	}
	for seq < last {
		ev := rpcReceive(t, stream)
		switch {
		case ev.GetMessage() != nil:
			take(ev.GetMessage())
			events++
		case ev.GetMessageBatch() != nil:
			for _, m := range ev.GetMessageBatch().GetMessages() {
				take(m)
			}
			events++
		}
	}
	return events
}

// A stream that asks for batches gets its catch-up in few events, every
// entry exactly once and in order, then live entries one by one.
func TestBatchedCatchUpDeliversEveryEntryOnceInFewEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.SendPerUser = server.Rate{} })
	a, b, conv := e.pair("batch_a", "batch_b")
	last := seedConversation(t, e, a, conv, 1200)

	for _, from := range []int64{0, 1, rand.Int64N(last), last - 1} {
		ctx, cancel := context.WithTimeout(b.ctx(), 20*time.Second)
		stream, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{
			Cursors:      []*parleyv1.Cursor{{ConversationId: conv, Seq: from}},
			BatchCatchUp: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		events := readEntries(t, stream, conv, from, last)
		if want := int((last-from)+255) / 256; events > want+4 {
			t.Errorf("from %d: %d events carried %d entries, want about %d batches", from, events, last-from, want)
		}
		for ev := rpcReceive(t, stream); ev.GetHeartbeat() == nil; ev = rpcReceive(t, stream) {
		}
		res, err := e.msgs().Send(a.ctx(), text("", "live", conv))
		if err != nil {
			t.Fatal(err)
		}
		for {
			ev := rpcReceive(t, stream)
			if ev.GetMessageBatch() != nil {
				t.Fatalf("from %d: a live entry came as a batch", from)
			}
			if m := ev.GetMessage(); m != nil {
				if m.GetSeq() != res.GetSeq() {
					t.Fatalf("from %d: live entry has seq %d, want %d", from, m.GetSeq(), res.GetSeq())
				}
				break
			}
		}
		last = res.GetSeq()
		stream.Close()
		cancel()
	}
}

// Catch-up entries are encoded straight from their rows for binary
// codecs and built as messages for JSON: every codec, batched or not, gets
// the entries ListMessages returns, replies, recalls and deletions included.
func TestCatchUpEntriesAreTheSameThroughEveryCodec(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.SendPerUser = server.Rate{} })
	a, b, conv := e.pair("codec_a", "codec_b")
	seedConversation(t, e, a, conv, 300)
	reply := text("", "a reply", conv)
	reply.ReplyToSeq = 2
	res, err := e.msgs().Send(a.ctx(), reply)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.msgs().Recall(a.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.msgs().DeleteForMe(b.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, Seqs: []int64{4, res.GetSeq()}}); err != nil {
		t.Fatal(err)
	}
	last := res.GetSeq() + 1 // the recall's own entry
	var want []*parleyv1.Message
	for after := int64(0); after < last; {
		page, err := e.msgs().ListMessages(b.ctx(), &parleyv1.ListMessagesRequest{
			ConversationId: conv, Position: &parleyv1.ListMessagesRequest_AfterSeq{AfterSeq: after}, Limit: 200,
		})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, page.GetMessages()...)
		after = page.GetMessages()[len(page.GetMessages())-1].GetSeq()
	}
	if int64(len(want)) != last || !want[3].GetDeleted() || !want[2].GetRecalled() || want[res.GetSeq()-1].GetReplyToSeq() != 2 {
		t.Fatalf("ListMessages gave %d entries (want %d) without the deletion, recall or reply seeded", len(want), last)
	}
	codecs := map[string][]connect.ClientOption{
		"gRPC":         {connect.WithGRPC()},
		"Connect":      nil,
		"Connect JSON": {connect.WithProtoJSON()},
		"gRPC JSON":    {connect.WithGRPC(), connect.WithProtoJSON()},
	}
	for name, opts := range codecs {
		for _, batch := range []bool{true, false} {
			ctx, cancel := context.WithTimeout(b.ctx(), 20*time.Second)
			stream, err := e.msgs(opts...).Subscribe(ctx, &parleyv1.SubscribeRequest{
				Cursors:      []*parleyv1.Cursor{{ConversationId: conv, Seq: 0}},
				BatchCatchUp: batch,
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []*parleyv1.Message
			for int64(len(got)) < last {
				ev := rpcReceive(t, stream)
				if m := ev.GetMessage(); m != nil && m.GetConversationId() == conv {
					got = append(got, m)
				}
				got = append(got, ev.GetMessageBatch().GetMessages()...)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("%s, batch %v: catch-up differs from ListMessages (-want +got):\n%s", name, batch, diff)
			}
			stream.Close()
			cancel()
		}
	}
}

// BenchmarkCatchUp is W4 in process: a stream that subscribes from an old
// cursor and reads 10,000 entries, batched and one by one.
//
//	go test -run '^$' -bench CatchUp -benchtime 20x ./server/
func BenchmarkCatchUp(b *testing.B) {
	e := newEnv(b, func(c *server.Config) { c.SendPerUser = server.Rate{} })
	a, r, conv := e.pair("catchup_a", "catchup_b")
	last := seedConversation(b, e, a, conv, 10_000)
	for _, batch := range []bool{true, false} {
		b.Run(fmt.Sprintf("batch=%v", batch), func(b *testing.B) {
			c := e.msgs(connect.WithGRPC())
			for b.Loop() {
				ctx, cancel := context.WithCancel(r.ctx())
				stream, err := c.Subscribe(ctx, &parleyv1.SubscribeRequest{
					Cursors:      []*parleyv1.Cursor{{ConversationId: conv, Seq: 1}},
					BatchCatchUp: batch,
				})
				if err != nil {
					b.Fatal(err)
				}
				readEntries(b, stream, conv, 1, last)
				cancel()
				stream.Close()
			}
		})
	}
}
