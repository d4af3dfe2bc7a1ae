package db_test

import (
	"context"
	"os"
	"testing"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/dbtest"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

func countConversations(t *testing.T, d *db.DB) int {
	t.Helper()
	var n int
	if err := d.Pool().QueryRow(context.Background(), "SELECT count(*) FROM conversations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A pipelined transaction commits what its runs wrote, in order; a failing
// statement rolls everything back; and the connection goes back to the pool
// outside any transaction.
func TestPipelinedTransactionsCommitOrRollBackWhole(t *testing.T) {
	d := dbtest.New(t)
	ctx := context.Background()
	base := countConversations(t, d)

	var a, b db.Conversation
	err := d.Pipelined(ctx, func(tx *db.PipelineTx) error {
		if err := tx.Run(ctx, false, func(q *db.Queries) (err error) {
			a, err = q.CreateConversation(ctx, 1)
			return err
		}); err != nil {
			return err
		}
		return tx.Run(ctx, true,
			func(q *db.Queries) (err error) { b, err = q.CreateConversation(ctx, 2); return err },
			func(q *db.Queries) error {
				return q.AddMember(ctx, db.AddMemberParams{ConversationID: b.ID, UserID: "00000000-0000-0000-0000-000000000000", Role: 2, JoinedSeq: 1})
			},
		)
	})
	if err == nil {
		t.Fatal("a member who is no user was added")
	}
	if a.ID == "" || b.ID == "" {
		t.Fatalf("the runs did not read their results: %+v %+v", a, b)
	}
	if n := countConversations(t, d); n != base {
		t.Fatalf("after a failed transaction %d conversations exist, want %d", n, base)
	}

	for range 3 { // reuses the pool's connections: none is left in a transaction
		err = d.Pipelined(ctx, func(tx *db.PipelineTx) error {
			return tx.Run(ctx, true,
				func(q *db.Queries) (err error) { a, err = q.CreateConversation(ctx, 1); return err },
				func(q *db.Queries) (err error) { b, err = q.CreateConversation(ctx, 2); return err },
			)
		})
		if err != nil {
			t.Fatal(err)
		}
		if a.Kind != 1 || b.Kind != 2 {
			t.Fatalf("results out of order: kinds %d, %d", a.Kind, b.Kind)
		}
	}
	if n := countConversations(t, d); n != base+6 {
		t.Fatalf("after three commits %d conversations exist, want %d", n, base+6)
	}

	// Nothing run: nothing to commit. An error before any run: nothing to undo.
	if err := d.Pipelined(ctx, func(*db.PipelineTx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}
