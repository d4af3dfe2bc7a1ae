package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parley-chat/parley/db/dbtest"
)

// realDatabaseErrors returns errors pgx really gives when the database is
// out of reach: a dial to no server, a session ended by the server, a query
// on the dead connection after it, and a closed pool.
func realDatabaseErrors(t *testing.T) map[string]error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := map[string]error{}

	_, err := pgx.Connect(ctx, "postgres://postgres@/parley?host="+t.TempDir()+"&sslmode=disable")
	errs["dial to a socket nobody listens on"] = err
	_, err = pgx.Connect(ctx, "postgres://postgres@127.0.0.1:1/parley?sslmode=disable&connect_timeout=2")
	errs["TCP connection refused"] = err

	url := dbtest.URL(t)
	victim, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(ctx)
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", victim.PgConn().PID()); err != nil {
		t.Fatal(err)
	}
	_, err = victim.Exec(ctx, "SELECT 1")
	errs["session terminated under a query"] = fmt.Errorf("look up user: %w", err)
	_, err = victim.Exec(ctx, "SELECT 1")
	errs["query on the dead connection"] = err

	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	errs["closed pool"] = pool.Ping(ctx)
	for name, err := range errs {
		if err == nil {
			t.Fatalf("%s: got no error", name)
		}
	}
	return errs
}

func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	for name, err := range realDatabaseErrors(t) {
		if !isUnavailable(err) {
			t.Errorf("%s: isUnavailable(%v) = false, want true", name, err)
		}
	}
	unavailable := map[string]error{
		"admin shutdown":          &pgconn.PgError{Code: "57P01"},
		"crash shutdown":          &pgconn.PgError{Code: "57P02"},
		"starting up":             fmt.Errorf("begin: %w", &pgconn.PgError{Code: "57P03"}),
		"connection failure":      &pgconn.PgError{Code: "08006"},
		"too many connections":    &pgconn.PgError{Code: "53300"},
		"EOF on a dead conn":      fmt.Errorf("receive message: %w", io.ErrUnexpectedEOF),
		"conn closed":             pgconn.ErrConnClosed,
		"plain EOF from the wire": fmt.Errorf("read: %w", io.EOF),
	}
	for name, err := range unavailable {
		if !isUnavailable(err) {
			t.Errorf("%s: isUnavailable(%v) = false, want true", name, err)
		}
	}
	available := map[string]error{
		"nil":                nil,
		"unique violation":   &pgconn.PgError{Code: "23505"},
		"syntax error":       &pgconn.PgError{Code: "42601"},
		"serialization":      &pgconn.PgError{Code: "40001"},
		"query canceled":     &pgconn.PgError{Code: "57014"},
		"a sentinel":         errUserNotFound,
		"no rows":            pgx.ErrNoRows,
		"a bug":              errors.New("index out of range"),
		"request canceled":   fmt.Errorf("acquire: %w", context.Canceled),
		"request deadline":   fmt.Errorf("acquire: %w", context.DeadlineExceeded),
		"wrong db password":  fmt.Errorf("connect: %w", &pgconn.PgError{Code: "28P01"}),
		"database not found": fmt.Errorf("connect: %w", &pgconn.PgError{Code: "3D000"}),
	}
	for name, err := range available {
		if isUnavailable(err) {
			t.Errorf("%s: isUnavailable(%v) = true, want false", name, err)
		}
	}
}

// Every RPC's errors go through toConnectError: a database out of reach is
// Unavailable (retryable), never Internal.
func TestToConnectErrorDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	for name, err := range realDatabaseErrors(t) {
		got := toConnectError(ctx, logger, "/test/Proc", fmt.Errorf("send: %w", err))
		if code := connect.CodeOf(got); code != connect.CodeUnavailable {
			t.Errorf("%s: code %v (%v), want unavailable", name, code, got)
		}
		if !errors.Is(got, errDatabaseUnavailable) {
			t.Errorf("%s: %v, want errDatabaseUnavailable", name, got)
		}
	}
	if code := connect.CodeOf(toConnectError(ctx, logger, "/test/Proc", &pgconn.PgError{Code: "23505"})); code != connect.CodeInternal {
		t.Errorf("unique violation: code %v, want internal (a bug, not an outage)", code)
	}
	if code := connect.CodeOf(toConnectError(ctx, logger, "/test/Proc", context.DeadlineExceeded)); code != connect.CodeDeadlineExceeded {
		t.Errorf("deadline: code %v, want deadline_exceeded", code)
	}
}
