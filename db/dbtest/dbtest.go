// Package dbtest gives each test its own fresh PostgreSQL database, cloned from
// a migrated template so that creating one takes milliseconds.
//
// The server is found in this order: PARLEY_TEST_DATABASE_URL (a URL to any
// database on a server where the user may create databases); the local server
// on 127.0.0.1:5432; otherwise a private server started from the machine's
// PostgreSQL installation for the life of the test binary.
//
// PARLEY_TEST_PRIVATE=1 skips the first two and always starts the private
// server, as on a fresh machine where nothing listens: CI runs the tests that
// way too, so the path a new user takes stays tested.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/embedpg"
)

const localURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Private reports whether PARLEY_TEST_PRIVATE asks the tests to use only
// servers they start themselves (PostgreSQL here, Redis in the server tests).
func Private() bool {
	v := os.Getenv("PARLEY_TEST_PRIVATE")
	return v != "" && v != "0" && v != "false"
}

// maxConns caps each test database's pool (New). pgxpool's default is
// max(4, NumCPU): on a many-core machine every parallel test of every test
// binary could open dozens of connections to a server that others share.
const maxConns = 4

// Advisory lock keys (hashed from these with the template's name), taken on
// the server the template lives on.
const (
	// buildLock is held, exclusively, while a test binary builds or drops a
	// template.
	buildLock = "parley-dbtest-template"
	// useLock is held shared by every test binary using the template, for its
	// whole life; whoever can take it exclusively at the end is the last.
	useLock = "parley-dbtest-template-users "
)

var (
	// The server and template are set up once per test binary and shared by all
	// its tests; package state is the only way to share them across tests.
	setupOnce sync.Once
	setupErr  error
	adminURL  string
	template  string
	private   *embedpg.Server
	privDir   string
	// user holds this binary's shared use of the template (useLock) until
	// Main releases it.
	user *pgx.Conn
)

// Main runs the tests of a package, then drops the template if no other test
// binary still uses it and stops the private server, if one was started, so
// that nothing the tests made stays behind. Call it from TestMain:
// os.Exit(dbtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if private != nil {
		// The server goes with everything on it.
		if user != nil {
			_ = user.Close(ctx)
		}
		_ = private.Stop(ctx)
		_ = os.RemoveAll(privDir)
		return code
	}
	if err := releaseTemplate(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "dbtest: %v\n", err)
	}
	return code
}

// Ready finds or starts the server and builds the template now, if no test of
// this binary has yet. URL and New call it; a test counting goroutines calls
// it first, since a private server's goroutines live as long as the binary.
func Ready(tb testing.TB) {
	tb.Helper()
	setupOnce.Do(func() { setupErr = setup() })
	if setupErr != nil {
		tb.Fatalf("dbtest: %v", setupErr)
	}
}

// URL creates a fresh, migrated database for the test and returns its URL.
// The database is dropped when the test ends. The URL sets no pool size:
// it serves single connections too (New caps its pool).
func URL(tb testing.TB) string {
	tb.Helper()
	Ready(tb)
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

// New creates a fresh, migrated database for the test and opens it, with a
// pool of at most maxConns connections.
func New(tb testing.TB) *db.DB {
	tb.Helper()
	u := URL(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := db.Open(ctx, withPoolMax(u, maxConns))
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
	if !Private() {
		if u := os.Getenv("PARLEY_TEST_DATABASE_URL"); u != "" {
			return u, nil
		}
		pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(pingCtx, localURL); err == nil {
			conn.Close(ctx)
			return localURL, nil
		}
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
// version, and marks it in use by this test binary until releaseTemplate.
// Test binaries of several packages run at once (go test ./...), so an
// advisory lock makes one of them build it while the others wait, and a
// shared one counts the binaries using it.
func ensureTemplate(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", redact(adminURL), err)
	}
	if err := buildTemplate(ctx, conn); err != nil {
		conn.Close(ctx)
		return err
	}
	user = conn
	return nil
}

func buildTemplate(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", buildLock); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	defer conn.Exec(ctx, "SELECT pg_advisory_unlock(hashtext($1))", buildLock) //nolint:errcheck // the lock ends with the connection anyway
	// Taken under buildLock, so that no one drops the template between this
	// binary finding it and marking it used.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock_shared(hashtext($1))", useLock+template); err != nil {
		return fmt.Errorf("mark template in use: %w", err)
	}

	var isTemplate *bool
	err := conn.QueryRow(ctx, "SELECT datistemplate FROM pg_database WHERE datname = $1", template).Scan(&isTemplate)
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

// releaseTemplate ends this binary's use of the template and drops it if no
// other binary uses it: the server is not ours, so we leave it as we found
// it. A binary starting meanwhile waits on buildLock and builds it again.
// Closing the connection releases every lock, also when the binary dies.
func releaseTemplate(ctx context.Context) error {
	if user == nil {
		return nil
	}
	conn := user
	user = nil
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock_shared(hashtext($1))", useLock+template); err != nil {
		return fmt.Errorf("end use of template: %w", err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", buildLock); err != nil {
		return fmt.Errorf("lock template: %w", err)
	}
	var last bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext($1))", useLock+template).Scan(&last); err != nil {
		return fmt.Errorf("count template users: %w", err)
	}
	if !last {
		return nil
	}
	// PostgreSQL refuses to drop a database marked as a template.
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s IS_TEMPLATE false", template)); err != nil && !isUndefinedDatabase(err) {
		return fmt.Errorf("unmark template: %w", err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", template)); err != nil {
		return fmt.Errorf("drop template: %w", err)
	}
	return nil
}

// isUndefinedDatabase reports whether err is SQLSTATE 3D000.
func isUndefinedDatabase(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "3D000"
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
	// The scheme version keeps binaries of an older dbtest, which neither
	// count themselves in useLock nor drop templates, off this one's name.
	fmt.Fprint(h, "dbtest scheme 2")
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

// withPoolMax sets pgxpool's pool_max_conns on a URL (db.Open reads it).
func withPoolMax(base string, n int) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(n))
	u.RawQuery = q.Encode()
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
