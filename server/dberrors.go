package server

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// isUnavailable reports whether err means the database cannot be reached
// right now (down, restarting, refusing connections, or the connection died
// under the query), as opposed to a query that failed on a database that
// answers. Such a failure is the client's to retry, so toConnectError answers
// it with errDatabaseUnavailable (Unavailable) rather than Internal.
//
// A request's own deadline or cancellation is not classified here: it keeps
// its own code.
func isUnavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// A server that answers decides by its SQLSTATE, even inside a
	// ConnectError: a wrong password is a configuration error, not an outage.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return unavailableState(pgErr.Code)
	}
	var connectErr *pgconn.ConnectError
	var opErr *net.OpError
	switch {
	case errors.As(err, &connectErr),
		errors.Is(err, puddle.ErrClosedPool),
		errors.Is(err, pgconn.ErrConnClosed),
		// The connection died mid-query: the server went away.
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		// Reading from or writing to the server's socket failed.
		errors.As(err, &opErr):
		return true
	}
	// Not pgconn.SafeToRetry: it also covers "conn busy", a connection used
	// by two goroutines at once, which is a bug to log as Internal.
	return false
}

// unavailableState reports whether a SQLSTATE says the server cannot serve
// right now.
func unavailableState(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"): // connection_exception and its subclasses
		return true
	case code == "57P01", // admin_shutdown: a fast or smart shutdown ended the session
		code == "57P02", // crash_shutdown: another backend crashed
		code == "57P03", // cannot_connect_now: starting up, recovering, or shutting down
		code == "53300": // too_many_connections
		return true
	}
	return false
}
