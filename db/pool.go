package db

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DB is the application's handle to PostgreSQL: a pool plus the generated
// queries bound to it.
type DB struct {
	*Queries
	pool *pgxpool.Pool
}

// sessionDefaults are the settings each connection starts with, unless the
// URL sets them (Open says why).
var sessionDefaults = map[string]string{
	"plan_cache_mode":  "force_generic_plan",
	"random_page_cost": "1.1",
}

// Open connects to the database at url, checks that it is reachable and that it
// keeps committed data durable, and returns the handle. Close releases it.
func Open(ctx context.Context, url string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	// Every query looks rows up by key, so one generic plan per prepared
	// statement serves all parameters. PostgreSQL would otherwise plan the
	// hot statements of Send (array parameters, several joins) afresh on
	// every call, which cost more CPU than running them. A URL that sets
	// plan_cache_mode itself wins.
	//
	// random_page_cost at 1.1 (the default 4 models spinning disks) tells the
	// planner what is true of a chat server's hot set, which is in memory:
	// an index probe is cheap. Generic plans otherwise scan small tables
	// whole for Send's ANY(array) lookups: on a bench's 800 members,
	// ListMembersForAppend took 0.32 ms instead of 0.19.
	for name, value := range sessionDefaults {
		if _, set := cfg.ConnConfig.RuntimeParams[name]; !set {
			cfg.ConnConfig.RuntimeParams[name] = value
		}
	}
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		registerStringUUIDs(conn.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := checkDurability(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return &DB{Queries: New(pool), pool: pool}, nil
}

// Pool is the underlying connection pool.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// Close closes every connection of the pool.
func (db *DB) Close() { db.pool.Close() }

// Tx runs fn in a transaction: commit if fn returns nil, roll back otherwise.
func (db *DB) Tx(ctx context.Context, fn func(*Queries) error) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error { return fn(db.WithTx(tx)) })
}

// checkDurability refuses a server that could lose acknowledged writes:
// Parley acknowledges a message only after it is committed, and that promise
// is empty when the server does not flush commits to disk.
func checkDurability(ctx context.Context, pool *pgxpool.Pool) error {
	for _, setting := range []string{"fsync", "synchronous_commit"} {
		var value string
		if err := pool.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&value); err != nil {
			return fmt.Errorf("read %s setting: %w", setting, err)
		}
		if value == "off" {
			return fmt.Errorf("database has %s=off: PostgreSQL could lose committed messages after a crash, "+
				"and Parley acknowledges a message only once it is durable; set %s=on", setting, setting)
		}
	}
	return nil
}

// IsNoRows reports whether err means a query found no row.
func IsNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// IsDataError reports whether PostgreSQL refused err's statement for the
// data it carried (SQLSTATE classes 22, data exception, and 23, integrity
// constraint violation): the same statement without that data may succeed,
// unlike after a lost connection or a server shutting down.
func IsDataError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23"))
}

// IsUniqueViolation reports whether err is a unique-constraint violation
// (SQLSTATE 23505), optionally of the named constraint.
func IsUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return false
	}
	return constraint == "" || pgErr.ConstraintName == constraint
}
