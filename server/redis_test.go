package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parley-chat/parley/db/dbtest"
)

var (
	redisOnce sync.Once
	sharedURL string
	redisErr  error
)

// redisURL returns a Redis server for the test: PARLEY_TEST_REDIS_URL, else
// the local one on 127.0.0.1:6379 when it answers, else a private
// redis-server started for this test binary. PARLEY_TEST_PRIVATE=1 (see
// dbtest.Private) skips straight to the private one. Tests isolate
// themselves with their own pub/sub channel.
func redisURL(t testing.TB) string {
	t.Helper()
	redisOnce.Do(func() {
		if u := os.Getenv("PARLEY_TEST_REDIS_URL"); u != "" && !dbtest.Private() {
			sharedURL = u
			return
		}
		if !dbtest.Private() && redisAnswers("127.0.0.1:6379") {
			sharedURL = "redis://127.0.0.1:6379"
			return
		}
		var addr string
		addr, redisErr = startRedis(nil, 0)
		sharedURL = "redis://" + addr
	})
	if redisErr != nil {
		t.Fatalf("no Redis at PARLEY_TEST_REDIS_URL or 127.0.0.1:6379, and starting one failed: %v", redisErr)
	}
	return sharedURL
}

func redisAnswers(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// startRedis starts a private redis-server (on port, or a free one when 0)
// that keeps nothing on disk, and returns its address. With t it is stopped
// when the test ends; without, when the test binary exits.
func startRedis(t testing.TB, port int) (string, error) {
	if port == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	// The shared server has no test to stop it: it dies with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start redis-server (apt-get install redis-server): %w", err)
	}
	if t != nil {
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	for range 100 {
		if redisAnswers(addr) {
			return addr, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return "", fmt.Errorf("redis-server on %s did not answer", addr)
}

// killRedis stops the private server listening on addr.
func killRedis(t testing.TB, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, port, _ := net.SplitHostPort(addr)
	if out, err := exec.CommandContext(ctx, "redis-cli", "-p", port, "shutdown", "nosave").CombinedOutput(); err != nil && redisAnswers(addr) {
		t.Fatalf("stop redis on %s: %v %s", addr, err, out)
	}
	for range 100 {
		if !redisAnswers(addr) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redis on %s still answers", addr)
}
