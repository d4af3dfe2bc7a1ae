package server_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// Not parallel: it runs while the parallel tests wait, so every goroutine it
// finds afterwards is its own.
func TestStreamsLeaveNoGoroutinesBehind(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Run("open and close streams", func(t *testing.T) {
		e := newEnv(t)
		a, b, conv := e.pair("leak_a", "leak_b")
		for i := range 20 {
			who := []account{a, b}[i%2]
			ctx, cancel := context.WithTimeout(who.ctx(), 10*time.Second)
			stream, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: 0}}})
			if err != nil {
				t.Fatal(err)
			}
			for stream.Receive() && stream.Msg().GetHeartbeat() == nil {
			}
			if _, err := e.msgs().Send(a.ctx(), text("", "ping", conv)); err != nil {
				t.Fatal(err)
			}
			cancel()
			stream.Close()
		}
		// Server, client and database pool close in this subtest's cleanups.
	})
	goleak.VerifyNone(t, ignore)
}
