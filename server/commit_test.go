package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/dbtest"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// commitFixture is a database with users a, b and outsider, and the direct
// conversation of a and b (b keeps the default privacy: strangers limited).
type commitFixture struct {
	t              *testing.T
	db             *db.DB
	hub            *hub
	c              *committer
	a, b, outsider string
	direct         string
}

func newCommitFixture(t *testing.T) *commitFixture {
	t.Helper()
	ctx := context.Background()
	d := dbtest.New(t)
	f := &commitFixture{t: t, db: d, hub: newHub(64)}
	f.c = &committer{db: d, hub: f.hub, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, u := range []*string{&f.a, &f.b, &f.outsider} {
		row, err := createUser(ctx, d, db.CreateUserParams{Username: fmt.Sprintf("commit_%d", rand.Uint32()), DisplayName: "u", PasswordHash: "x"})
		if err != nil {
			t.Fatal(err)
		}
		*u = row.ID
	}
	conv, err := d.CreateConversation(ctx, int16(parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT))
	if err != nil {
		t.Fatal(err)
	}
	f.direct = conv.ID
	for _, u := range []string{f.a, f.b} {
		if err := d.AddMember(ctx, db.AddMemberParams{ConversationID: conv.ID, UserID: u, Role: 3, JoinedSeq: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *commitFixture) send(sender, conv, clientID string) *pendingSend {
	req := &parleyv1.SendRequest{ClientMsgId: clientID, Content: &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: clientID}}}
	kind, content, err := sendContent(req)
	if err != nil {
		f.t.Fatal(err)
	}
	return &pendingSend{senderID: sender, convID: conv, req: req, kind: kind, content: content, done: make(chan sendResult, 1)}
}

// commit runs one batch and returns its results in order.
func (f *commitFixture) commit(sends ...*pendingSend) []sendResult {
	f.t.Helper()
	f.c.commit(sends)
	out := make([]sendResult, len(sends))
	for i, p := range sends {
		out[i] = <-p.done
	}
	return out
}

func TestABatchCommitsWhatPassesAndFailsTheRestAlone(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t)
	stream, _ := f.hub.subscribe(f.b, "s", 10, nil)
	missing := "00000000-0000-0000-0000-000000000001"
	got := f.commit(
		f.send(f.a, f.direct, "m1"),
		f.send(f.a, f.direct, "m1"), // a retry in the same batch
		f.send(f.a, missing, "m2"),
		f.send(f.outsider, f.direct, "m3"),
		f.send(f.a, f.direct, "m4"),
		f.send(f.a, f.direct, "m5"),
		f.send(f.a, f.direct, "m6"), // b has not replied: a stranger's 4th
	)
	want := []struct {
		seq       int64
		duplicate bool
		err       error
	}{
		{seq: 1}, {seq: 1, duplicate: true}, {err: errConversationNotFound}, {err: errConversationNotFound},
		{seq: 2}, {seq: 3}, {err: errStrangerLimit},
	}
	for i, w := range want {
		g := got[i]
		if !errors.Is(g.err, w.err) || g.msg.GetSeq() != w.seq || g.duplicate != w.duplicate {
			t.Errorf("send %d: got seq %d duplicate %v err %v; want seq %d duplicate %v err %v",
				i, g.msg.GetSeq(), g.duplicate, g.err, w.seq, w.duplicate, w.err)
		}
	}
	if got[0].msg.GetId() != got[1].msg.GetId() {
		t.Errorf("the retry in the batch got message %s, the original %s", got[1].msg.GetId(), got[0].msg.GetId())
	}

	ctx := context.Background()
	m, err := f.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: f.direct, UserID: f.a})
	if err != nil {
		t.Fatal(err)
	}
	if m.LastSeq != 3 || m.ReadSeq != 3 || m.SentCount != 3 {
		t.Errorf("after the batch: last_seq %d, sender's read_seq %d, sent_count %d; want 3, 3, 3", m.LastSeq, m.ReadSeq, m.SentCount)
	}
	evs := stream.take()
	var seqs []int64
	for _, ev := range evs {
		seqs = append(seqs, ev.GetMessage().GetSeq())
	}
	if !slices.Equal(seqs, []int64{1, 2, 3}) {
		t.Fatalf("recipient's stream got seqs %v, want [1 2 3]", seqs)
	}

	// A later batch: retries of stored messages return the originals and
	// store nothing; a reply from b lifts the stranger limit for the rest
	// of the same batch; a retry the rules would pass fails the insert and
	// the batch runs again.
	got = f.commit(
		f.send(f.a, f.direct, "m4"),
		f.send(f.a, f.direct, "m6"),
		f.send(f.b, f.direct, "r1"),
		f.send(f.a, f.direct, "m6b"),
		f.send(f.a, f.direct, "m5"), // passes the rules now: found by its key
	)
	if !got[0].duplicate || got[0].msg.GetSeq() != 2 {
		t.Errorf("retry of a stored message: seq %d duplicate %v, want seq 2 duplicate", got[0].msg.GetSeq(), got[0].duplicate)
	}
	if !errors.Is(got[1].err, errStrangerLimit) {
		t.Errorf("a refused message sent again before the reply: %v, want the stranger limit", got[1].err)
	}
	if got[2].err != nil || got[2].msg.GetSeq() != 4 || got[3].err != nil || got[3].msg.GetSeq() != 5 {
		t.Errorf("reply and the next message: %+v %+v; want seqs 4 and 5", got[2], got[3])
	}
	if !got[4].duplicate || got[4].msg.GetSeq() != 3 {
		t.Errorf("retry of a stored message that passes the rules: seq %d duplicate %v err %v, want seq 3 duplicate",
			got[4].msg.GetSeq(), got[4].duplicate, got[4].err)
	}
	if m, err = f.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: f.direct, UserID: f.b}); err != nil {
		t.Fatal(err)
	} else if m.LastSeq != 5 {
		t.Errorf("last_seq %d after two batches, want 5", m.LastSeq)
	}
}

func TestAppendAfterCloseSaysShuttingDown(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t)
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := newCommitter(f.db, f.hub, m, 1, 8, f.c.logger)
	r, err := c.append(context.Background(), f.send(f.a, f.direct, "before"))
	if err != nil || r.msg.GetSeq() != 1 {
		t.Fatalf("append before Close: seq %d, %v", r.msg.GetSeq(), err)
	}
	var got dto.Metric
	if err := m.batchSize.Write(&got); err != nil || got.GetHistogram().GetSampleCount() != 1 || got.GetHistogram().GetSampleSum() != 1 {
		t.Fatalf("batch size metric after one Send: %v (%v), want one batch of one message", got.GetHistogram(), err)
	}
	c.Close()
	if _, err := c.append(context.Background(), f.send(f.a, f.direct, "after")); !errors.Is(err, errShuttingDown) {
		t.Fatalf("append after Close: %v, want %v", err, errShuttingDown)
	}
}

// TestABatchCommitsAroundAMessageThePostgreSQLRefuses puts in one batch,
// among other users' messages, a message PostgreSQL refuses (a NUL in its
// client message id: the edge refuses those now, but anything the database
// refuses for its data must fail alone). Before, the whole batch failed:
// every other Send in the group commit got Internal.
func TestABatchCommitsAroundAMessageThePostgreSQLRefuses(t *testing.T) {
	t.Parallel()
	f := newCommitFixture(t)
	stream, _ := f.hub.subscribe(f.a, "s", 10, nil)
	sends := []*pendingSend{
		f.send(f.b, f.direct, "b1"),
		f.send(f.a, f.direct, "a1"),
		f.send(f.a, f.direct, "bad\x00id"),
		f.send(f.b, f.direct, "b2"),
		f.send(f.a, f.direct, "a2"),
	}
	got := f.commit(sends...)
	var seqs []int64
	for i, r := range got {
		if i == 2 {
			if r.err == nil {
				t.Fatalf("the message PostgreSQL refuses: got seq %d, want an error", r.msg.GetSeq())
			}
			continue
		}
		if r.err != nil {
			t.Fatalf("send %d (%s) failed with the batch: %v", i, sends[i].req.GetClientMsgId(), r.err)
		}
		seqs = append(seqs, r.msg.GetSeq())
	}
	if !slices.Equal(seqs, []int64{1, 2, 3, 4}) {
		t.Fatalf("acked seqs %v, want 1 2 3 4 in queue order", seqs)
	}
	rows, err := f.db.ListMessagesAfter(context.Background(), db.ListMessagesAfterParams{ConversationID: f.direct, AfterSeq: 0, UntilSeq: 100, MaxRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for _, r := range rows {
		stored = append(stored, *r.ClientMsgID)
	}
	if !slices.Equal(stored, []string{"b1", "a1", "b2", "a2"}) {
		t.Fatalf("stored %v, want b1 a1 b2 a2", stored)
	}
	var published []int64
	for _, ev := range stream.take() {
		published = append(published, ev.GetMessage().GetSeq())
	}
	if !slices.Equal(published, []int64{1, 2, 3, 4}) {
		t.Fatalf("a's stream got seqs %v, want 1 2 3 4", published)
	}
}
