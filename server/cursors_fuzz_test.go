package server_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// FuzzCursors sends arbitrary cursors to Sync and arbitrary positions to
// ListMessages, over real HTTP to a server on PostgreSQL. It holds if each
// answers or refuses with InvalidArgument, never Internal; if what Sync
// answers lies after the cursor, in seq order, up to the position it
// returns, and Sync from that position repeats nothing; and if ListMessages
// answers only messages before (or after) the position asked, in seq order.
func FuzzCursors(f *testing.F) {
	e := newEnv(f, rpcLoose)
	a, b, conv := e.pair("cursor_a", "cursor_b")
	m := e.msgs()
	for i := range 5 {
		if _, err := m.Send(b.ctx(), text("", string(rune('a'+i)), conv)); err != nil {
			f.Fatal(err)
		}
	}
	res, err := m.Sync(a.ctx(), &parleyv1.SyncRequest{})
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range res.GetPositions() {
		f.Add(p.GetConversationId(), p.GetSeq(), int32(0), p.GetSeq())
		f.Add(p.GetConversationId(), int64(1), int32(2), int64(2))
	}
	f.Add("00000000-0000-4000-8000-000000000000", int64(0), int32(1000), int64(0))
	ctx := a.ctx()
	f.Fuzz(func(t *testing.T, convID string, seq int64, limit int32, pos int64) {
		if !utf8.ValidString(convID) {
			return // the client cannot encode it; a proto string is UTF-8
		}
		cursor := &parleyv1.Cursor{ConversationId: convID, Seq: seq}
		res, err := m.Sync(ctx, &parleyv1.SyncRequest{Cursors: []*parleyv1.Cursor{cursor}, Limit: limit})
		if code := connect.CodeOf(err); err != nil && code != connect.CodeInvalidArgument {
			t.Fatalf("Sync(%v, limit %d): got code %v (%v), want an answer or %v", cursor, limit, code, err, connect.CodeInvalidArgument)
		}
		if err == nil {
			checkSync(t, res, cursor)
			again, err := m.Sync(ctx, &parleyv1.SyncRequest{Cursors: res.GetPositions(), Limit: limit})
			if err != nil {
				t.Fatalf("Sync from the positions Sync(%v) returned: %v", cursor, err)
			}
			for _, p := range res.GetPositions() {
				for _, msg := range again.GetMessages() {
					if msg.GetConversationId() == p.GetConversationId() && msg.GetSeq() <= p.GetSeq() {
						t.Fatalf("Sync from position %v repeats seq %d", p, msg.GetSeq())
					}
				}
			}
		}
		for _, before := range []bool{true, false} {
			req := &parleyv1.ListMessagesRequest{ConversationId: convID, Limit: limit}
			if before {
				req.Position = &parleyv1.ListMessagesRequest_BeforeSeq{BeforeSeq: pos}
			} else {
				req.Position = &parleyv1.ListMessagesRequest_AfterSeq{AfterSeq: pos}
			}
			res, err := m.ListMessages(ctx, req)
			switch code := connect.CodeOf(err); {
			case err == nil:
			case code == connect.CodeInvalidArgument, code == connect.CodeNotFound, code == connect.CodePermissionDenied:
				continue // a conversation the caller is not in, or no such one
			default:
				t.Fatalf("ListMessages(%v): got code %v (%v), want an answer, %v, %v or %v",
					req, code, err, connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodePermissionDenied)
			}
			last := int64(-1)
			for _, msg := range res.GetMessages() {
				if msg.GetSeq() <= last || before && msg.GetSeq() >= pos || !before && msg.GetSeq() <= pos {
					t.Fatalf("ListMessages(%v) answers seq %d after seq %d", req, msg.GetSeq(), last)
				}
				last = msg.GetSeq()
			}
		}
	})
}

// checkSync fails t unless res, Sync's answer to cursor, holds each
// conversation's messages in seq order, after the cursor and up to the
// position it returns.
func checkSync(t *testing.T, res *parleyv1.SyncResponse, cursor *parleyv1.Cursor) {
	t.Helper()
	// The server answers ids in canonical (lower-case) form whatever case
	// the cursor used; see textRule.
	cursorID := strings.ToLower(cursor.GetConversationId())
	positions := map[string]int64{}
	for _, p := range res.GetPositions() {
		positions[p.GetConversationId()] = p.GetSeq()
	}
	for _, id := range res.GetRemovedConversationIds() {
		if id != cursorID {
			t.Fatalf("Sync(%v) reports %s removed, for which it had no cursor", cursor, id)
		}
		if _, ok := positions[id]; ok {
			t.Fatalf("Sync(%v) reports %s removed and answers a position in it", cursor, id)
		}
	}
	last := map[string]int64{}
	for _, msg := range res.GetMessages() {
		id, seq := msg.GetConversationId(), msg.GetSeq()
		if prev, ok := last[id]; ok && seq <= prev {
			t.Fatalf("Sync(%v) answers seq %d of %s after seq %d", cursor, seq, id, prev)
		}
		last[id] = seq
		if id == cursorID && seq <= cursor.GetSeq() {
			t.Fatalf("Sync(%v) answers seq %d, at or before the cursor", cursor, seq)
		}
		if pos, ok := positions[id]; !ok || seq > pos {
			t.Fatalf("Sync(%v) answers seq %d of %s past its position (%d, %v)", cursor, seq, id, pos, ok)
		}
	}
}
