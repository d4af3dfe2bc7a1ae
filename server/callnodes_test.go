package server_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/rueidis"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/rtc"
	"github.com/parley-chat/parley/server"
)

// callNodes starts two nodes sharing PostgreSQL and Redis, each with its own
// media server on loopback, and returns them with a Redis client to look at
// the leases.
func callNodes(t *testing.T, edit ...func(*server.Config)) (*env, *env, rueidis.Client) {
	t.Helper()
	url, ch := redisURL(t), testChannel()
	cfg := func(c *server.Config) {
		c.RedisURL, c.RedisChannel = url, ch
		c.RTC = rtc.Config{Loopback: true, UDPAddr: "127.0.0.1:0"}
		for _, e := range edit {
			e(c)
		}
	}
	n1 := newEnv(t, cfg)
	n2 := newEnvOn(t, n1.db, cfg)
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	return n1, n2, rc
}

// callHost returns the URL the lease of callID names, or "" when there is none.
func callHost(t testing.TB, rc rueidis.Client, callID string) string {
	t.Helper()
	url, err := rc.Do(context.Background(), rc.B().Get().Key(server.CallNodeKey(callID)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("read the lease of call %s: %v", callID, err)
	}
	return url
}

// waitMedia waits until every peer has received at least n packets from
// every user in from[peer].
func waitMedia(t testing.TB, within time.Duration, n int, want map[*peer][]string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		short := ""
		for p, froms := range want {
			for _, from := range froms {
				if got := p.receivedFrom(from); got < n && short == "" {
					short = p.who.user.GetUsername() + " got " + itoa(got) + " packets from " + from
				}
			}
		}
		if short == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; want %d", within, short, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestCallOnTwoNodesSharesOneRoom(t *testing.T) {
	t.Parallel()
	n1, n2, rc := callNodes(t)
	alice, bob, conv := n1.pair("alice", "bob")
	call := startCall(t, n1.calls(), alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	if _, err := n2.calls().AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	// Alice's stream on node 1 creates the room there.
	a := newPeer(t, n1.calls(), alice, call.GetId())
	if got := callHost(t, rc, call.GetId()); got != n1.srv.URL {
		t.Fatalf("the lease names %q; want node 1, %s", got, n1.srv.URL)
	}
	// Bob signals through node 2, which passes everything to node 1.
	b := newPeer(t, n2.calls(), bob, call.GetId())
	waitMedia(t, 10*time.Second, 10, map[*peer][]string{a: {bob.user.GetId()}, b: {alice.user.GetId()}})
	if got := callHost(t, rc, call.GetId()); got != n1.srv.URL {
		t.Fatalf("with both in the call the lease names %q; want node 1", got)
	}

	// Bob hangs up on node 2: node 1 closes the room, both streams end and
	// the lease is gone.
	if _, err := n2.calls().HangUp(bob.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{a, b} {
		select {
		case <-p.ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s's Signals stream is still open after the call ended", p.who.user.GetUsername())
		}
	}
	for deadline := time.Now().Add(5 * time.Second); callHost(t, rc, call.GetId()) != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call's lease outlived the call")
		}
	}
}

// A call whose node went away (its lease names a node nobody answers at) is
// Unavailable until the lease runs out; then the node asked hosts it anew.
func TestCallWhoseNodeDiedMovesWhenItsLeaseRunsOut(t *testing.T) {
	t.Parallel()
	n1, n2, rc := callNodes(t)
	alice, bob, conv := n1.pair("alice", "bob")
	call := startCall(t, n1.calls(), alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	if _, err := n1.calls().AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	dead := "https://127.0.0.1:1"
	err := rc.Do(context.Background(), rc.B().Set().Key(server.CallNodeKey(call.GetId())).Value(dead).PxMilliseconds(1500).Build()).Error()
	if err != nil {
		t.Fatal(err)
	}
	s, err := n2.calls().Signals(alice.ctx(), &parleyv1.SignalsRequest{CallId: call.GetId()})
	if err == nil {
		if s.Receive() {
			t.Fatalf("Signals through a dead node gave %v", s.Msg())
		}
		err = s.Err()
		s.Close()
	}
	wantCode(t, err, connect.CodeUnavailable)
	_, err = n1.calls().Signal(bob.ctx(), &parleyv1.SignalRequest{CallId: call.GetId(), Signal: &parleyv1.SignalRequest_RestartIce{RestartIce: &parleyv1.RestartIce{}}})
	wantCode(t, err, connect.CodeUnavailable)

	time.Sleep(1600 * time.Millisecond)
	a := newPeer(t, n2.calls(), alice, call.GetId())
	if got := callHost(t, rc, call.GetId()); got != n2.srv.URL {
		t.Fatalf("after the lease ran out it names %q; want node 2, %s", got, n2.srv.URL)
	}
	b := newPeer(t, n1.calls(), bob, call.GetId())
	waitMedia(t, 10*time.Second, 10, map[*peer][]string{a: {bob.user.GetId()}, b: {alice.user.GetId()}})
}
