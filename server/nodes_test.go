package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/server"
)

// twoNodes starts two servers on one database, as two `parley serve`
// processes sharing PostgreSQL and Redis would be. Each node publishes on and
// listens to its own channel name; give both the same to connect them.
func twoNodes(t *testing.T, redis, channel1, channel2 string, heartbeat time.Duration) (*env, *env) {
	t.Helper()
	cfg := func(channel string) func(*server.Config) {
		return func(c *server.Config) {
			c.RedisURL, c.RedisChannel, c.HeartbeatInterval = redis, channel, heartbeat
			c.SendPerUser = server.Rate{}
		}
	}
	n1 := newEnv(t, cfg(channel1))
	n2 := newEnvOn(t, n1.db, cfg(channel2))
	return n1, n2
}

func testChannel() string { return "parley:test:" + strconv.FormatUint(rand.Uint64(), 36) }

// openStream subscribes b at the given cursor and waits until the stream is live.
func openStream(t *testing.T, e *env, who account, conv string, cursor int64) *connect.ServerStreamForClient[parleyv1.SubscribeResponse] {
	t.Helper()
	ctx, cancel := context.WithTimeout(who.ctx(), 30*time.Second)
	t.Cleanup(cancel)
	stream, err := e.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: cursor}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	for stream.Receive() {
		if stream.Msg().GetHeartbeat() != nil {
			return stream
		}
	}
	t.Fatalf("stream ended before going live: %v", stream.Err())
	return nil
}

func TestMessageSentOnOneNodeReachesStreamsOnAnother(t *testing.T) {
	t.Parallel()
	ch := testChannel()
	n1, n2 := twoNodes(t, redisURL(t), ch, ch, time.Hour) // no heartbeat: only the relay can deliver
	a, b, conv := n1.pair("nodes_a", "nodes_b")
	stream := openStream(t, n2, b, conv, 1)
	start := time.Now()
	sent, err := n1.msgs().Send(a.ctx(), text("", "across nodes", conv))
	if err != nil {
		t.Fatal(err)
	}
	got := receiveSeqs(t, stream, conv, sent.GetSeq())
	if len(got) != 1 || got[0] != sent.GetSeq() {
		t.Fatalf("node 2 stream got seqs %v, want [%d]", got, sent.GetSeq())
	}
	t.Logf("node 1 Send → node 2 stream: %v", time.Since(start))
}

func TestLostPubSubMessagesAreHealedFromPostgres(t *testing.T) {
	t.Parallel()
	// The nodes listen on different channels: every envelope between them is
	// lost, as if Redis dropped it. The heartbeat's positions, read from
	// PostgreSQL, must bring the stream up to date anyway.
	n1, n2 := twoNodes(t, redisURL(t), testChannel(), testChannel(), 200*time.Millisecond)
	a, b, conv := n1.pair("heal_a", "heal_b")
	stream := openStream(t, n2, b, conv, 1)
	var last int64
	for i := range 5 {
		res, err := n1.msgs().Send(a.ctx(), text("", fmt.Sprint("lost ", i), conv))
		if err != nil {
			t.Fatal(err)
		}
		last = res.GetSeq()
	}
	got := receiveSeqs(t, stream, conv, last)
	for i, seq := range got {
		if seq != int64(2+i) {
			t.Fatalf("healed seqs %v, want 2..%d in order", got, last)
		}
	}
}

func TestLogoutOnOneNodeEndsStreamsOnAnother(t *testing.T) {
	t.Parallel()
	ch := testChannel()
	n1, n2 := twoNodes(t, redisURL(t), ch, ch, time.Hour)
	_, b, conv := n1.pair("logout2_a", "logout2_b")
	stream := openStream(t, n2, b, conv, 1)
	if _, err := n1.auth().Logout(b.ctx(), &parleyv1.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for stream.Receive() {
	}
	if connect.CodeOf(stream.Err()) != connect.CodeUnauthenticated {
		t.Fatalf("stream ended with %v, want Unauthenticated", stream.Err())
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("stream on node 2 ended %v after logout on node 1, want within 1s", elapsed)
	}
}

// When the relay never carries a logout (here the nodes listen on different
// channels, as if every message were lost), the node's session watch still
// ends the session's streams once its cached check runs out.
func TestLogoutWhoseRelayMessageIsLostStillEndsStreams(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	cfg := func(channel string) func(*server.Config) {
		return func(c *server.Config) {
			c.RedisURL, c.RedisChannel, c.HeartbeatInterval, c.SessionCacheTTL = redisURL(t), channel, time.Hour, ttl
		}
	}
	n1 := newEnv(t, cfg(testChannel()))
	n2 := newEnvOn(t, n1.db, cfg(testChannel()))
	_, b, conv := n1.pair("lostlogout_a", "lostlogout_b")
	stream := openStream(t, n2, b, conv, 1)
	if _, err := n1.auth().Logout(b.ctx(), &parleyv1.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for stream.Receive() {
	}
	if connect.CodeOf(stream.Err()) != connect.CodeUnauthenticated {
		t.Fatalf("stream ended with %v, want Unauthenticated", stream.Err())
	}
	// The cache's TTL plus one check interval, with room for a slow machine.
	if elapsed := time.Since(start); elapsed > ttl+time.Second+time.Second {
		t.Fatalf("stream on node 2 ended %v after logout on node 1, want within the session cache TTL and a second", elapsed)
	}
}

func TestRedisRestartLosesNothing(t *testing.T) {
	t.Parallel()
	addr, err := startRedis(t, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := testChannel()
	n1, n2 := twoNodes(t, "redis://"+addr, ch, ch, 300*time.Millisecond)
	a, b, conv := n1.pair("restart_a", "restart_b")
	stream := openStream(t, n2, b, conv, 1)
	send := func(n int) int64 {
		var last int64
		for i := range n {
			res, err := n1.msgs().Send(a.ctx(), text("", fmt.Sprint("m", i), conv))
			if err != nil {
				t.Fatalf("Send while Redis restarts: %v", err) // Send must not depend on Redis
			}
			last = res.GetSeq()
		}
		return last
	}
	send(3)
	killRedis(t, addr)
	send(3)
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if _, err := startRedis(t, p); err != nil {
		t.Fatal(err)
	}
	last := send(3)
	got := receiveSeqs(t, stream, conv, last)
	for i, seq := range got {
		if seq != int64(2+i) {
			t.Fatalf("seqs across the restart %v, want 2..%d exactly once in order", got, last)
		}
	}
	if int64(len(got)) != last-1 {
		t.Fatalf("got %d messages, want %d", len(got), last-1)
	}
	// Readiness reports the relay healthy again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		res, err := n1.client.Get(n1.srv.URL + "/readyz")
		if err == nil {
			body := make([]byte, 64)
			n, _ := res.Body.Read(body)
			res.Body.Close()
			if string(body[:n]) == "ok\n" {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("/readyz did not report ok after Redis came back")
}

func TestPresenceSpansNodes(t *testing.T) {
	t.Parallel()
	ch := testChannel()
	n1, n2 := twoNodes(t, redisURL(t), ch, ch, time.Hour)
	a, b, conv := n1.pair("pnodes_a", "pnodes_b")
	bobs := openStream(t, n1, b, conv, 1)

	open := func(n *env) (context.CancelFunc, *connect.ServerStreamForClient[parleyv1.SubscribeResponse]) {
		ctx, cancel := context.WithTimeout(a.ctx(), 20*time.Second)
		s, err := n.msgs().Subscribe(ctx, &parleyv1.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for s.Receive() && s.Msg().GetHeartbeat() == nil {
		}
		return cancel, s
	}
	cancel1, s1 := open(n1)
	if p := nextPresence(t, bobs); !p.GetOnline() {
		t.Fatalf("got %v, want alice online", p)
	}
	cancel2, s2 := open(n2)
	// Closing the node 1 stream leaves alice online through node 2: the next
	// presence event bob sees must be the offline after node 2 closes too.
	cancel1()
	s1.Close()
	time.Sleep(300 * time.Millisecond)
	closedAt := time.Now()
	cancel2()
	s2.Close()
	p := nextPresence(t, bobs)
	if p.GetOnline() {
		t.Fatalf("got %v, want offline", p)
	}
	if p.GetLastSeenTime().AsTime().Before(closedAt.Add(-100 * time.Millisecond)) {
		t.Fatalf("offline announced at %v, before alice's last stream (node 2) closed at %v", p.GetLastSeenTime().AsTime(), closedAt)
	}
}
