package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/embedpg"
	"github.com/parley-chat/parley/server"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	started := time.Now()
	cfg, err := parseConfig("serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	logger, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	dbh, err := database(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer dbh.stop()
	if err := db.Migrate(ctx, dbh.url, logger); err != nil {
		return err
	}
	d, err := db.Open(ctx, dbh.url)
	if err != nil {
		return err
	}
	defer d.Close()
	// Every pooled connection went with the server that died; drop them at
	// once rather than hand each out to fail once.
	dbh.onRestart(func() { d.Pool().Reset() })
	cfg.server.Liveness = dbh.live
	// Listen first: the node's URL for the other nodes is its address.
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	defer ln.Close()
	if cfg.server.NodeURL == "" && cfg.server.RedisURL != "" {
		cfg.server.NodeURL = nodeURL(ln.Addr(), cfg.tlsCert != "")
		logger.Info("calls: other nodes reach this one at its own address; set PARLEY_NODE_URL if they cannot", "node_url", cfg.server.NodeURL)
	}
	srv, err := server.New(ctx, d, cfg.server, logger)
	if err != nil {
		return err
	}
	defer srv.Close()

	if cfg.debugAddr != "" {
		stopDebug, err := serveDebug(cfg.debugAddr, logger)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	// Streams live as long as their clients, so they end through this
	// context on shutdown rather than through a write timeout.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	scheme := "h2c"
	if cfg.tlsCert != "" {
		scheme = "TLS"
	}
	errc := make(chan error, 1)
	go func() {
		if cfg.tlsCert != "" {
			errc <- httpSrv.ServeTLS(ln, cfg.tlsCert, cfg.tlsKey)
		} else {
			errc <- httpSrv.Serve(ln)
		}
	}()
	logger.Info("parley serving", "addr", ln.Addr().String(), "transport", scheme, "startup", time.Since(started).Round(time.Millisecond))
	fmt.Fprintf(stdout, "parley listening on %s (%s)\n", ln.Addr(), scheme)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.shutdown)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
	defer cancel()
	// Shutdown waits for idle connections; streams never go idle, so end
	// them now and let unary calls in flight finish.
	cancelBase()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		_ = httpSrv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// nodeURL is the URL other nodes reach this one at, from the address it
// listens on: that host when it is a concrete one, else the machine's first
// address that is not a loopback one (other machines cannot reach
// 127.0.0.1), else loopback.
func nodeURL(addr net.Addr, tls bool) string {
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return scheme + net.JoinHostPort(host, port)
	}
	host = "127.0.0.1"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				host = n.IP.String()
				break
			}
		}
	}
	return scheme + net.JoinHostPort(host, port)
}

// serveDebug serves Go's profiler on its own listener, apart from the API,
// so that it is never exposed by accident with it.
func serveDebug(addr string, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on debug address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	logger.Info("profiler listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig("migrate", args, getenv, stderr)
	if err != nil {
		return err
	}
	logger, err := cfg.logger(stderr)
	if err != nil {
		return err
	}
	dbh, err := database(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer dbh.stop()
	return db.Migrate(ctx, dbh.url, logger)
}

const embeddedDatabase = "parley"

// databaseHandle is the database serve and migrate use.
type databaseHandle struct {
	url  string
	stop func()
	// live is nil while the database is there or can be brought back, and
	// says why not otherwise; nil for an external database, which is not
	// ours to bring back.
	live func() error
	// restarted holds the function to call after the embedded server came
	// back (an atomic pointer: it is set after the supervisor starts).
	restarted *atomic.Pointer[func()]
}

// onRestart sets the function called after the embedded database restarted.
func (h databaseHandle) onRestart(f func()) {
	if h.restarted != nil {
		h.restarted.Store(&f)
	}
}

// database returns the database to use: PARLEY_DATABASE_URL, or else a
// private PostgreSQL started under the data directory, supervised (restarted
// when it dies), which the returned handle's stop stops.
func database(ctx context.Context, cfg config, logger *slog.Logger) (databaseHandle, error) {
	if cfg.databaseURL != "" {
		return databaseHandle{url: cfg.databaseURL, stop: func() {}}, nil
	}
	dir, err := filepath.Abs(filepath.Join(cfg.dataDir, "postgres"))
	if err != nil {
		return databaseHandle{}, fmt.Errorf("data dir: %w", err)
	}
	logger.Info("starting embedded PostgreSQL", "data_dir", dir)
	restarted := new(atomic.Pointer[func()])
	pg, err := embedpg.Supervise(ctx, embedpg.Options{
		DataDir: dir,
		Logger:  logger.With("component", "postgres"),
		// `make run` as root in /root must just work, without opening /root
		// to the postgres user.
		FallbackDir: "/var/lib/parley",
	}, embedpg.SuperviseOptions{
		OnRestart: func() {
			if f := restarted.Load(); f != nil {
				(*f)()
			}
		},
	})
	if err != nil {
		return databaseHandle{}, fmt.Errorf("embedded PostgreSQL: %w", err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pg.Stop(ctx); err != nil {
			logger.Error("stop embedded PostgreSQL", "error", err)
		}
	}
	if err := createDatabase(ctx, pg.URL("postgres"), embeddedDatabase); err != nil {
		stop()
		return databaseHandle{}, err
	}
	return databaseHandle{url: pg.URL(embeddedDatabase), stop: stop, live: pg.Err, restarted: restarted}, nil
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to embedded PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
