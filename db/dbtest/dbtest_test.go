package dbtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/db/embedpg"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// The environment of a test binary that TestTemplateIsDroppedByTheLastBinary
// runs as one of the test binaries sharing a server.
const (
	childEnv = "PARLEY_DBTEST_CHILD_DIR"
	// childWait bounds each wait of a child and of the test for a child.
	childWait = time.Minute
)

// Two test binaries share a server they do not own, as go test ./... runs
// them: the first to end leaves the template to the other, and the last
// drops it, so the server keeps nothing of the tests.
func TestTemplateIsDroppedByTheLastBinary(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("a child binary runs only TestChildBinary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A server of this test's own: others' test binaries use the shared ones.
	// Not t.TempDir: its parent is 0700, and the server may run as postgres.
	dir, err := os.MkdirTemp("", "parley-dbtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := embedpg.Start(ctx, embedpg.Options{DataDir: filepath.Join(dir, "pg"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	admin := srv.URL("postgres")
	sum, err := migrationsSum()
	if err != nil {
		t.Fatal(err)
	}
	name := "parley_template_" + sum

	a := startChild(t, admin, "a")
	a.waitFor(t, "ready")
	b := startChild(t, admin, "b")
	b.waitFor(t, "ready")

	a.finish(t)
	if got := databases(ctx, t, admin); !strings.Contains(got, name) {
		t.Fatalf("after the first binary ended, databases %s; want the template %s kept for the other", got, name)
	}
	b.finish(t) // b clones the template once more before it ends
	if got := databases(ctx, t, admin); got != "" {
		t.Fatalf("after the last binary ended, databases %s; want none of the tests' left", got)
	}
}

// TestChildBinary is one of TestTemplateIsDroppedByTheLastBinary's test
// binaries: it takes a database, says so, waits to be told to go on, takes
// another and ends through Main.
func TestChildBinary(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("run by TestTemplateIsDroppedByTheLastBinary")
	}
	URL(t)
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := waitForFile(filepath.Join(dir, "go")); err != nil {
		t.Fatal(err)
	}
	URL(t)
}

type child struct {
	dir  string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
}

// lockedBuffer collects a child's output, which the test may read while
// the child still writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startChild(t *testing.T, adminURL, name string) *child {
	t.Helper()
	c := &child{dir: filepath.Join(t.TempDir(), name), out: new(lockedBuffer), done: make(chan error, 1)}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestChildBinary$", "-test.count=1", "-test.v")
	c.cmd.Env = append(os.Environ(), childEnv+"="+c.dir, "PARLEY_TEST_DATABASE_URL="+adminURL, "PARLEY_TEST_PRIVATE=")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() { _ = c.cmd.Process.Kill() })
	return c
}

// waitFor waits for the child to create file, failing if it exits first.
func (c *child) waitFor(t *testing.T, file string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- waitForFile(filepath.Join(c.dir, file)) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("child %s: %v; output:\n%s", c.dir, err, c.out)
		}
	case err := <-c.done:
		t.Fatalf("child %s exited (%v) before %s; output:\n%s", c.dir, err, file, c.out)
	}
}

// finish tells the child to go on and waits for it to exit.
func (c *child) finish(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.done:
		if err != nil {
			t.Fatalf("child %s: %v; output:\n%s", c.dir, err, c.out)
		}
	case <-time.After(childWait):
		t.Fatalf("child %s did not exit; output:\n%s", c.dir, c.out)
	}
}

func waitForFile(path string) error {
	for deadline := time.Now().Add(childWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%s did not appear within %s", path, childWait)
}

// databases lists the databases the tests made (templates and per-test).
func databases(ctx context.Context, t *testing.T, adminURL string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var names string
	err = conn.QueryRow(ctx, "SELECT coalesce(string_agg(datname, ' ' ORDER BY datname), '') FROM pg_database WHERE datname LIKE 'parley\\_%'").Scan(&names)
	if err != nil {
		t.Fatal(err)
	}
	return names
}
