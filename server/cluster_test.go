package server_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startRedisCluster starts a private three-master Redis Cluster for the test
// and returns the address of one of its nodes, which is all a client needs.
func startRedisCluster(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var addrs []string
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", fmt.Sprintf("%s/nodes-%d.conf", dir, i), "--dir", dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server (apt-get install redis-server): %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addrs = append(addrs, addr)
	}
	for _, a := range addrs {
		deadline := time.Now().Add(5 * time.Second)
		for !redisAnswers(a) {
			if time.Now().After(deadline) {
				t.Fatalf("redis-server on %s did not answer", a)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("create the cluster: %v\n%s", err, out)
	}
	for _, a := range addrs {
		_, port, _ := net.SplitHostPort(a)
		for {
			out, err := exec.CommandContext(ctx, "redis-cli", "-p", port, "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("cluster node %s not ready: %v %s", a, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return addrs[0]
}

// On a Redis Cluster, events still reach streams on the other node in both
// directions, and presence (a hash per user, in any slot) spans the nodes.
func TestNodesShareEventsAndPresenceThroughARedisCluster(t *testing.T) {
	t.Parallel()
	addr := startRedisCluster(t)
	ch := testChannel()
	n1, n2 := twoNodes(t, "redis://"+addr, ch, ch, time.Hour) // no heartbeat: only the relay delivers
	a, b, conv := n1.pair("cluster_a", "cluster_b")

	onN2 := openStream(t, n2, b, conv, 1)
	sent, err := n1.msgs().Send(a.ctx(), text("", "node 1 to node 2", conv))
	if err != nil {
		t.Fatal(err)
	}
	if got := receiveSeqs(t, onN2, conv, sent.GetSeq()); len(got) != 1 || got[0] != sent.GetSeq() {
		t.Fatalf("node 2 stream got seqs %v, want [%d]", got, sent.GetSeq())
	}

	// Alice comes online through node 1; Bob's stream on node 2 hears it.
	onN1 := openStream(t, n1, a, conv, sent.GetSeq())
	if p := nextPresence(t, onN2); !p.GetOnline() || p.GetUserId() != a.user.GetId() {
		t.Fatalf("node 2 got presence %v, want alice online", p)
	}

	reply, err := n2.msgs().Send(b.ctx(), text("", "node 2 to node 1", conv))
	if err != nil {
		t.Fatal(err)
	}
	if got := receiveSeqs(t, onN1, conv, reply.GetSeq()); len(got) != 1 || got[0] != reply.GetSeq() {
		t.Fatalf("node 1 stream got seqs %v, want [%d]", got, reply.GetSeq())
	}
}
