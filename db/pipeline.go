package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PipelineTx is a transaction whose statements travel to PostgreSQL a few at
// a time: Run sends several generated queries in one round trip, and the
// first Run also begins the transaction, the last one may commit it. Send's
// group commit is a handful of statements per batch, each otherwise a round
// trip of its own under load; see Pipelined.
type PipelineTx struct {
	conn *pgx.Conn
	open bool // the transaction has begun
	done bool // committed
}

// Pipelined runs fn in a PipelineTx on one connection. When fn returns an
// error the transaction rolls back; when it returns nil without committing
// in its last Run, Pipelined commits.
func (db *DB) Pipelined(ctx context.Context, fn func(*PipelineTx) error) error {
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	// The pool destroys a connection released inside a transaction, so an
	// unfinished rollback cannot leak a transaction to the next user.
	defer c.Release()
	tx := &PipelineTx{conn: c.Conn()}
	if err := fn(tx); err != nil {
		if tx.open && !tx.done {
			_, _ = tx.conn.Exec(context.WithoutCancel(ctx), "rollback")
		}
		return err
	}
	if tx.open && !tx.done {
		if _, err := tx.conn.Exec(ctx, "commit"); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	return nil
}

// Queries returns the generated queries bound to the transaction, one round
// trip each, for what cannot wait for a Run. The transaction must have begun.
func (tx *PipelineTx) Queries() *Queries { return New(tx.conn) }

// errQueued stops a generated query in Run's first pass, which only records
// the statement it would send.
var errQueued = errors.New("statement queued")

// Run sends the statements of steps in one round trip, preceded by BEGIN if
// the transaction has not begun and followed by COMMIT if commit is set, and
// returns the first error. Each step calls exactly one generated query and
// keeps its result; steps run twice, first to learn their statements, then
// to read the results, so they must do nothing else.
func (tx *PipelineTx) Run(ctx context.Context, commit bool, steps ...func(*Queries) error) error {
	rec := &recorder{}
	for _, step := range steps {
		if err := step(New(rec)); !errors.Is(err, errQueued) {
			return fmt.Errorf("pipeline step did not queue one statement: %w", err)
		}
	}
	batch := &pgx.Batch{}
	if !tx.open {
		batch.Queue("begin")
	}
	for _, s := range rec.stmts {
		batch.Queue(s.sql, s.args...)
	}
	if commit {
		batch.Queue("commit")
	}
	br := tx.conn.SendBatch(ctx, batch)
	if !tx.open {
		tx.open = true
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return fmt.Errorf("begin: %w", err)
		}
	}
	var first error
	for i, step := range steps {
		rep := &replayer{br: br, want: rec.stmts[i]}
		if err := step(New(rep)); err != nil && first == nil {
			first = err
		}
		if !rep.used && first == nil {
			first = fmt.Errorf("pipeline step %d read no result", i)
		}
	}
	if commit && first == nil {
		if _, err := br.Exec(); err != nil {
			first = fmt.Errorf("commit: %w", err)
		} else {
			tx.done = true
		}
	}
	if err := br.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

type statement struct {
	sql  string
	args []any
}

// recorder is a DBTX that records the one statement a generated query sends.
type recorder struct{ stmts []statement }

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.stmts = append(r.stmts, statement{sql, args})
	return pgconn.CommandTag{}, errQueued
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.stmts = append(r.stmts, statement{sql, args})
	return nil, errQueued
}

func (r *recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.stmts = append(r.stmts, statement{sql, args})
	return errRow{errQueued}
}

// replayer is a DBTX that answers a generated query with the next result of
// a sent batch.
type replayer struct {
	br   pgx.BatchResults
	want statement
	used bool
}

func (r *replayer) check(sql string) error {
	if r.used || sql != r.want.sql {
		return errors.New("pipeline step sent a different statement the second time")
	}
	r.used = true
	return nil
}

func (r *replayer) Exec(_ context.Context, sql string, _ ...any) (pgconn.CommandTag, error) {
	if err := r.check(sql); err != nil {
		return pgconn.CommandTag{}, err
	}
	return r.br.Exec()
}

func (r *replayer) Query(_ context.Context, sql string, _ ...any) (pgx.Rows, error) {
	if err := r.check(sql); err != nil {
		return nil, err
	}
	return r.br.Query()
}

func (r *replayer) QueryRow(_ context.Context, sql string, _ ...any) pgx.Row {
	if err := r.check(sql); err != nil {
		return errRow{err}
	}
	return r.br.QueryRow()
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
