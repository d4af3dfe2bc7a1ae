package server_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

// A client that stops reading its stream must cost the server a bounded
// buffer, not a stuck handler: the stream is cut off, its handler ends with
// ResourceExhausted, the user's other streams get everything, and the slow
// client resumes from its cursors without losing anything.
func TestASlowConsumerIsCutOffAndResumesWithoutLoss(t *testing.T) {
	t.Parallel()
	e := newEnv(t, unthrottled, func(c *server.Config) { c.StreamBuffer = 8 })
	a, b, conv := e.pair("slow_a", "slow_b")

	// The slow device's HTTP/2 connection grants the server a 64 KiB window
	// and never more, as it never reads.
	tr := e.client.Transport.(*http.Transport).Clone()
	tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	slowClient := parleyv1connect.NewMessagesServiceClient(&http.Client{Transport: tr}, e.srv.URL, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(b.ctx(), 30*time.Second)
	defer cancel()
	slow, err := slowClient.Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	for ev := rpcReceive(t, slow); ev.GetHeartbeat() == nil; ev = rpcReceive(t, slow) {
	}
	fast, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	for ev := rpcReceive(t, fast); ev.GetHeartbeat() == nil; ev = rpcReceive(t, fast) {
	}

	// 200 messages of 4 KiB of random text (gzip cannot shrink it below
	// the window): 800 KiB, far past the window and the buffer.
	const n = 200
	for range n {
		if _, err := e.msgs().Send(a.ctx(), text("", randomText(4<<10), conv)); err != nil {
			t.Fatal(err)
		}
	}
	last := int64(1 + n)
	for seq := int64(2); seq <= last; {
		ev := rpcReceive(t, fast)
		if m := ev.GetMessage(); m != nil {
			if m.GetSeq() != seq {
				t.Fatalf("fast stream got seq %d, want %d", m.GetSeq(), seq)
			}
			seq++
		}
	}

	// The server ended the slow stream's handler, though its client reads
	// nothing: the handler's outcome is in the metrics.
	want := `parley_rpc_requests_total{code="resource_exhausted",procedure="/parley.v1.MessagesService/Subscribe"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for _, page := e.get("/metrics"); !strings.Contains(page, want); _, page = e.get("/metrics") {
		if time.Now().After(deadline) {
			_, page := e.get("/metrics")
			var lines []string
			for _, l := range strings.Split(page, "\n") {
				if strings.Contains(l, "Subscribe") && strings.HasPrefix(l, "parley_rpc_requests_total") {
					lines = append(lines, l)
				}
			}
			t.Fatalf("no %s in the metrics (%q): the slow stream's handler is still running", want, lines)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The slow client reads what reached it, then an error, and resumes.
	var cursor int64 = 1
	for slow.Receive() {
		if m := slow.Msg().GetMessage(); m != nil {
			if m.GetSeq() != cursor+1 {
				t.Fatalf("slow stream got seq %d after %d", m.GetSeq(), cursor)
			}
			cursor = m.GetSeq()
		}
	}
	if slow.Err() == nil {
		t.Fatal("the slow stream ended without an error")
	}
	if cursor >= last {
		t.Fatalf("the slow stream got all %d messages; it was never behind", n)
	}
	resumed, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: cursor}}})
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	for cursor < last {
		if m := rpcReceive(t, resumed).GetMessage(); m != nil {
			if m.GetSeq() != cursor+1 {
				t.Fatalf("resumed stream got seq %d after %d", m.GetSeq(), cursor)
			}
			cursor = m.GetSeq()
		}
	}
}

// randomText is n characters that compression cannot shrink much.
func randomText(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}
