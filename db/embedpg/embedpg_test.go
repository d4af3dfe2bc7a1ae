package embedpg

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir := filepath.Join(reachableTempDir(t), "pg")

	first := &recorder{}
	srv := startServer(ctx, t, Options{DataDir: dataDir, Logger: slog.New(first)})
	if !first.has("initializing PostgreSQL cluster") {
		t.Errorf("first start did not initialize a cluster; logged %q", first.messages())
	}
	if !first.has("database system is ready to accept connections") {
		t.Errorf("postgres's own log lines were not forwarded; logged %q", first.messages())
	}

	conn := connect(ctx, t, srv.URL("postgres"))
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: got %d, %v; want 1", one, err)
	}
	for _, setting := range []string{"fsync", "synchronous_commit", "full_page_writes"} {
		var got string
		if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatalf("SHOW %s: %v", setting, err)
		}
		if got != "on" {
			t.Errorf("%s: got %q, want on", setting, got)
		}
	}
	var listen string
	if err := conn.QueryRow(ctx, "SHOW listen_addresses").Scan(&listen); err != nil || listen != "" {
		t.Errorf("listen_addresses: got %q, %v; want empty (unix socket only)", listen, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE kept"); err != nil {
		t.Fatalf("create database: %v", err)
	}
	kept := connect(ctx, t, srv.URL("kept"))
	if _, err := kept.Exec(ctx, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('hello')"); err != nil {
		t.Fatalf("write to new database: %v", err)
	}
	conn.Close(ctx)
	kept.Close(ctx)

	t.Run("a second server on the same data dir is refused clearly", func(t *testing.T) {
		_, err := Start(ctx, Options{DataDir: dataDir})
		if err == nil {
			t.Fatal("second Start on a data dir in use: got nil error")
		}
		if !strings.Contains(err.Error(), "already running") {
			t.Errorf("got error %q, want it to say a server is already running", err)
		}
	})

	sockDir := srv.sockDir
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("second stop: got %v, want nil", err)
	}
	if _, err := os.Stat(sockDir); !os.IsNotExist(err) {
		t.Errorf("socket dir %s after stop: got %v, want it gone", sockDir, err)
	}

	second := &recorder{}
	srv = startServer(ctx, t, Options{DataDir: dataDir, Logger: slog.New(second)})
	if second.has("initializing PostgreSQL cluster") {
		t.Error("second start ran initdb again")
	}
	kept = connect(ctx, t, srv.URL("kept"))
	var body string
	if err := kept.QueryRow(ctx, "SELECT body FROM notes").Scan(&body); err != nil || body != "hello" {
		t.Errorf("row written before restart: got %q, %v; want hello", body, err)
	}
	kept.Close(ctx)
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("stop after restart: %v", err)
	}
}

func TestUnreachableDataDir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to another user")
	}
	// t.TempDir's parent is 0700 and root's: the postgres user cannot enter it.
	dir := t.TempDir()
	_, err := Start(t.Context(), Options{DataDir: filepath.Join(dir, "pg")})
	if err == nil {
		t.Fatal("Start in a directory the postgres user cannot reach: got nil error")
	}
	if want := "may not enter " + filepath.Dir(dir); !strings.Contains(err.Error(), want) {
		t.Errorf("got error %q, want it to contain %q", err, want)
	}
}

func TestFallbackDirLeavesPrivateParentsAlone(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("only root hands the server to another user")
	}
	// Like a clone in /root: the parent is private to root.
	dir := t.TempDir()
	parent := filepath.Dir(dir)
	before, err := os.Stat(parent)
	if err != nil {
		t.Fatal(err)
	}
	// Not reachableTempDir, which opens the parent of t.TempDir.
	base, err := os.MkdirTemp("", "parley-embedpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	fallback := filepath.Join(base, "var-lib-parley")
	dataDir := filepath.Join(dir, "data", "pg")
	rec := &recorder{}
	ctx := t.Context()
	srv := startServer(ctx, t, Options{DataDir: dataDir, FallbackDir: fallback, Logger: slog.New(rec)})
	conn := connect(ctx, t, srv.URL("postgres"))
	if _, err := conn.Exec(ctx, "CREATE DATABASE kept"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	after, err := os.Stat(parent)
	if err != nil {
		t.Fatal(err)
	}
	if after.Mode() != before.Mode() {
		t.Errorf("parent mode = %v, want it unchanged (%v)", after.Mode(), before.Mode())
	}
	target, err := os.Readlink(dataDir)
	if err != nil || filepath.Dir(target) != fallback {
		t.Errorf("data dir links to %q (%v), want a directory under %s", target, err, fallback)
	}
	if !rec.has("keeping the cluster where it can") {
		t.Errorf("where the cluster went was not logged; got %q", rec.messages())
	}

	// A restart finds the cluster through the link.
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	again := &recorder{}
	srv = startServer(ctx, t, Options{DataDir: dataDir, FallbackDir: fallback, Logger: slog.New(again)})
	if again.has("initializing PostgreSQL cluster") {
		t.Error("restart ran initdb again")
	}
	connect(ctx, t, srv.URL("kept"))
}

func TestURL(t *testing.T) {
	t.Parallel()
	s := &Server{sockDir: "/tmp/parley-pg123"}
	cfg, err := pgx.ParseConfig(s.URL("my db"))
	if err != nil {
		t.Fatalf("parse %s: %v", s.URL("my db"), err)
	}
	if cfg.Host != "/tmp/parley-pg123" || cfg.Port != 5432 || cfg.User != "postgres" || cfg.Database != "my db" {
		t.Errorf("got host %q port %d user %q database %q; want /tmp/parley-pg123 5432 postgres %q",
			cfg.Host, cfg.Port, cfg.User, cfg.Database, "my db")
	}
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int // sign
	}{
		{"15", "16", -1},
		{"9.6", "15", -1},
		{"16", "16", 0},
		{"16", "9", 1},
		{"beta", "9", -1},
	} {
		got := compareVersions(tc.a, tc.b)
		if sign(got) != tc.want {
			t.Errorf("compareVersions(%q, %q): got %d, want sign %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// reachableTempDir returns a test temp dir that the postgres user can enter
// when the test runs as root: t.TempDir and its parent are made 0700.
func reachableTempDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatalf("chmod %s: %v", d, err)
		}
	}
	return dir
}

func startServer(ctx context.Context, tb testing.TB, opts Options) *Server {
	tb.Helper()
	srv, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	tb.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			tb.Errorf("stop: %v", err)
		}
	})
	return srv
}

func connect(ctx context.Context, tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatalf("connect to %s: %v", url, err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// recorder is a slog.Handler that keeps the messages logged through it.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func (r *recorder) has(substr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if strings.Contains(m, substr) {
			return true
		}
	}
	return false
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}
