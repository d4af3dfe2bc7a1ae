package server_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parley-chat/parley/db/dbtest"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/rtc"
	"github.com/parley-chat/parley/server"
)

// Not parallel: it runs while the parallel tests wait, so every goroutine it
// finds afterwards is its own.
func TestStreamsLeaveNoGoroutinesBehind(t *testing.T) {
	// The database server first: a private one (on a machine where none
	// answers) keeps goroutines for the binary's life, not the streams'.
	dbtest.Ready(t)
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
	t.Run("ringing calls", func(t *testing.T) {
		// One call times out, one still rings when the server closes.
		e := newEnv(t, func(c *server.Config) { c.CallRingTimeout = 100 * time.Millisecond })
		a, b, conv := e.pair("ring_a", "ring_b")
		missed := startCall(t, e.calls(), a, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
		for {
			res, err := e.calls().GetCall(b.ctx(), &parleyv1.GetCallRequest{CallId: missed.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			if res.GetCall().GetState() == parleyv1.CallState_CALL_STATE_ENDED {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		startCall(t, e.calls(), b, conv, parleyv1.CallKind_CALL_KIND_VIDEO)
	})
	t.Run("signaling and media", func(t *testing.T) {
		e := newEnv(t, func(c *server.Config) { c.RTC = rtc.Config{Loopback: true, UDPAddr: "127.0.0.1:0"} })
		a, b, conv := e.pair("sig_a", "sig_b")
		call := startCall(t, e.calls(), a, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
		newPeer(t, e.calls(), a, call.GetId())
		if _, err := e.calls().AnswerCall(b.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
			t.Fatal(err)
		}
		pb := newPeer(t, e.calls(), b, call.GetId())
		for deadline := time.Now().Add(15 * time.Second); pb.receivedFrom(a.user.GetId()) == 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no media from sig_a")
			}
		}
		// The peers leave without hanging up; the server closing ends the rest.
	})
	goleak.VerifyNone(t, ignore)
}
