package server_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// nextPresence reads the stream until a presence event.
func nextPresence(t *testing.T, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse]) *parleyv1.PresenceEvent {
	t.Helper()
	for stream.Receive() {
		if p := stream.Msg().GetPresence(); p != nil {
			return p
		}
	}
	t.Fatalf("stream ended before a presence event: %v", stream.Err())
	return nil
}

func TestPresenceFollowsTheUsersStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, conv := e.pair("pres_a", "pres_b")
	bobs := openStream(t, e, b, conv, 1)

	// alice's first stream makes her online for bob; a second one changes nothing.
	ctx1, cancel1 := context.WithTimeout(a.ctx(), 20*time.Second)
	first, err := e.msgs().Subscribe(ctx1, &parleyv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if p := nextPresence(t, bobs); p.GetUserId() != a.user.GetId() || !p.GetOnline() {
		t.Fatalf("bob got %v, want alice online", p)
	}
	// A stream that starts while alice is online lists her.
	late := openStreamEvents(t, e, b)
	if !containsOnline(late, a.user.GetId()) {
		t.Fatalf("a new stream of bob's did not list alice online: %v", late)
	}
	ctx2, cancel2 := context.WithTimeout(a.ctx(), 20*time.Second)
	second, err := e.msgs().Subscribe(ctx2, &parleyv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for second.Receive() && second.Msg().GetHeartbeat() == nil {
	}
	cancel1()
	first.Close()
	// Only when her last stream closes is she offline, with a last-seen time.
	cancel2()
	second.Close()
	p := nextPresence(t, bobs)
	if p.GetUserId() != a.user.GetId() || p.GetOnline() || p.GetLastSeenTime() == nil {
		t.Fatalf("bob got %v, want alice offline with last_seen_time", p)
	}
	var seen *time.Time
	if err := e.db.Pool().QueryRow(context.Background(), "SELECT last_seen_at FROM users WHERE id = $1", a.user.GetId()).Scan(&seen); err != nil {
		t.Fatal(err)
	}
	if seen == nil {
		t.Fatal("last_seen_at not stored")
	}
}

// openStreamEvents opens a stream with no cursors and returns what it sends
// before going live.
func openStreamEvents(t *testing.T, e *env, who account) []*parleyv1.SubscribeResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(who.ctx(), 10*time.Second)
	defer cancel()
	stream, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var out []*parleyv1.SubscribeResponse
	for stream.Receive() {
		out = append(out, stream.Msg())
		if stream.Msg().GetHeartbeat() != nil {
			return out
		}
	}
	t.Fatalf("stream ended: %v", stream.Err())
	return nil
}

func containsOnline(events []*parleyv1.SubscribeResponse, userID string) bool {
	for _, ev := range events {
		if p := ev.GetPresence(); p.GetUserId() == userID && p.GetOnline() {
			return true
		}
	}
	return false
}

// Contacts see each other's presence without ever having talked; strangers
// do not.
func TestContactsSeeEachOthersPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, bob, stranger := e.signUp("pc_alice"), e.signUp("pc_bob"), e.signUp("pc_stranger")
	befriend(t, e.contacts(), alice, bob)

	ctx, cancel := context.WithTimeout(bob.ctx(), 10*time.Second)
	defer cancel()
	bobs, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer bobs.Close()
	for bobs.Receive() && bobs.Msg().GetHeartbeat() == nil {
	}
	// The stranger comes online first: Bob must not hear of it, so the
	// next presence event he gets is Alice's.
	strangerEvents := openStreamEvents(t, e, stranger)
	if containsOnline(strangerEvents, bob.user.GetId()) {
		t.Error("a stranger was told Bob is online")
	}
	aliceEvents := openStreamEvents(t, e, alice)
	if !containsOnline(aliceEvents, bob.user.GetId()) {
		t.Error("Alice's new stream did not list her contact Bob as online")
	}
	if p := nextPresence(t, bobs); p.GetUserId() != alice.user.GetId() || !p.GetOnline() {
		t.Fatalf("Bob got presence %v, want Alice online", p)
	}
}
