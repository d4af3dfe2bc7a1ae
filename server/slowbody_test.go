package server_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	"github.com/parley-chat/parley/server"
)

// A procedure that streams requests (gRPC reflection) lives as long as its
// client keeps talking: its body has no total deadline, but it must not go
// quiet for longer than the request body timeout. (The transports and the
// other rules are tested against `parley serve` in cmd/parley.)
func TestStreamedRequestsMustNotGoQuiet(t *testing.T) {
	t.Parallel()
	const limit = 300 * time.Millisecond
	e := newEnv(t, func(c *server.Config) { c.RequestBodyTimeout = limit })
	client := grpcreflect.NewClient(e.client, e.srv.URL, connect.WithGRPC())

	t.Run("a stream that keeps talking outlives the limit", func(t *testing.T) {
		stream := client.NewStream(context.Background())
		defer stream.Close()
		for start := time.Now(); time.Since(start) < 3*limit; time.Sleep(limit / 4) {
			if _, err := stream.ListServices(); err != nil {
				t.Fatalf("ListServices after %v: %v", time.Since(start).Round(time.Millisecond), err)
			}
		}
	})

	t.Run("a stream quiet for longer than the limit is cut off", func(t *testing.T) {
		stream := client.NewStream(context.Background())
		defer stream.Close()
		if _, err := stream.ListServices(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * limit) // quiet
		_, err := stream.ListServices()
		if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("ListServices after a quiet spell: %v, want DeadlineExceeded", err)
		}
	})
}
