// Package dbtest gives each test its own fresh PostgreSQL database, cloned from
// a migrated template so that creating one takes milliseconds.
//
// The server is found in this order: PARLEY_TEST_DATABASE_URL (a URL to any
// database on a server where the user may create databases); the local server
// on 127.0.0.1:5432; otherwise a private server started from the machine's
// PostgreSQL installation for the life of the test binary.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/embedpg"
)

const localURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	// The server and template are set up once per test binary and shared by all
	// its tests; package state is the only way to share them across tests.
	setupOnce sync.Once
	setupErr  error
	adminURL  string
	template  string
	private   *embedpg.Server
	privDir   string
)

// Main runs the tests of a package and then stops the private server, if one
// was started. Call it from TestMain: os.Exit(dbtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if private != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = private.Stop(ctx)
		_ = os.RemoveAll(privDir)
	}
	return code
}

// URL creates a fresh, migrated database for the test and returns its URL.
// The database is dropped when the test ends.
func URL(tb testing.TB) string {
	tb.Helper()
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		tb.Fatalf("dbtest: %v", setupErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "parley_test_" + randomHex(8)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("dbtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template)); err != nil {
		tb.Fatalf("dbtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			tb.Errorf("dbtest: connect to drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			tb.Errorf("dbtest: drop %s: %v", name, err)
		}
	})
	return withDatabase(adminURL, name)
}

// New creates a fresh, migrated database for the test and opens it.
func New(tb testing.TB) *db.DB {
	tb.Helper()
	u := URL(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := db.Open(ctx, u)
	if err != nil {
		tb.Fatalf("dbtest: open: %v", err)
	}
	tb.Cleanup(d.Close)
	return d
}

func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if adminURL, err = findServer(ctx); err != nil {
		return err
	}
	sum, err := migrationsSum()
	if err != nil {
		return err
	}
	template = "parley_template_" + sum
	return ensureTemplate(ctx)
}

func findServer(ctx context.Context) (string, error) {
	if u := os.Getenv("PARLEY_TEST_DATABASE_URL"); u != "" {
		return u, nil
	}
	pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(pingCtx, localURL); err == nil {
		conn.Close(ctx)
		return localURL, nil
	}
	dir, err := os.MkdirTemp("", "parley-dbtest-")
	if err != nil {
		return "", fmt.Errorf("make private server dir: %w", err)
	}
	// The server may run as the postgres user, which must reach its data dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("chmod private server dir: %w", err)
	}
	srv, err := embedpg.Start(ctx, embedpg.Options{DataDir: dir + "/pg", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL at PARLEY_TEST_DATABASE_URL or 127.0.0.1:5432, and starting a private one failed: %w", err)
	}
	private, privDir = srv, dir
	return srv.URL("postgres"), nil
}

// ensureTemplate creates and migrates the template database once per schema
// version. Test binaries of several packages run at once, so an advisory lock
// makes one of them build it while the others wait.
func ensureTemplate(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('parley-dbtest-template'))"); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtext('parley-dbtest-template'))") //nolint:errcheck // the lock ends with the connection anyway

	var isTemplate *bool
	err = conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", template).Scan(&isTemplate)
	switch {
	case err == nil && isTemplate != nil && *isTemplate:
		return nil
	case err == nil:
		// A run died while migrating: start over.
		if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", template)); err != nil {
			return fmt.Errorf("drop unfinished template: %w", err)
		}
	case !db.IsNoRows(err):
		return fmt.Errorf("look up template: %w", err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s", template)); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	if err := db.Migrate(ctx, withDatabase(adminURL, template), slog.New(slog.DiscardHandler)); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s IS_TEMPLATE true", template)); err != nil {
		return fmt.Errorf("mark template: %w", err)
	}
	return nil
}

// migrationsSum names the template after the migrations' content, so a changed
// schema gets a new template instead of a stale one.
func migrationsSum() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(db.Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(db.Migrations(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(database url)"
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
