package server

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// committer appends the messages of concurrent Sends in shared transactions
// (group commit). PostgreSQL makes a commit durable with one WAL flush, so a
// transaction per message caps a node at one message per flush. Sends queue
// here instead; a worker takes everything queued, checks each message under
// its conversations' row locks, allocates their seqs in queue order, writes
// the batch with one statement and commits once. A Send is acknowledged only
// after the commit that holds its message, and a message that fails its
// checks, or that PostgreSQL refuses for its data, fails alone.
//
// The batch size adapts to load by itself: while a worker commits, the next
// Sends queue up for the next worker, so an idle server commits each message
// at once and a busy one commits many per flush.
type committer struct {
	db       *db.DB
	hub      *hub
	logger   *slog.Logger
	metrics  *metrics // nil: none
	maxBatch int
	kinds    kindCache

	queue   chan *pendingSend
	stop    chan struct{} // closed by Close: workers exit
	stopped chan struct{} // closed when they have
	wg      sync.WaitGroup
}

// pendingSend is a checked Send waiting for its batch.
type pendingSend struct {
	senderID string
	convID   string
	req      *parleyv1.SendRequest
	kind     int16
	content  []byte
	media    []string        // the media the message refers to
	done     chan sendResult // buffered, so a worker never waits for a Send
}

type sendResult struct {
	msg       *parleyv1.Message
	duplicate bool // the message was stored by an earlier Send
	err       error
}

func newCommitter(d *db.DB, h *hub, m *metrics, workers, maxBatch int, logger *slog.Logger) *committer {
	c := &committer{
		db:       d,
		hub:      h,
		metrics:  m,
		logger:   logger.With("component", "committer"),
		maxBatch: maxBatch,
		queue:    make(chan *pendingSend, workers*maxBatch),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	c.wg.Add(workers)
	for range workers {
		go c.run()
	}
	return c
}

// Close stops the workers after their current batch. Call it after the
// HTTP server has drained its requests.
func (c *committer) Close() {
	close(c.stop)
	c.wg.Wait()
	close(c.stopped)
}

// append queues a Send and waits until its batch has committed.
func (c *committer) append(ctx context.Context, p *pendingSend) (sendResult, error) {
	p.done = make(chan sendResult, 1)
	select {
	case c.queue <- p:
	case <-ctx.Done():
		return sendResult{}, ctx.Err()
	case <-c.stop:
		return sendResult{}, errShuttingDown
	}
	select {
	case r := <-p.done:
		return r, r.err
	case <-ctx.Done():
		// The message may still commit; a retry with the same client
		// message id returns it.
		return sendResult{}, ctx.Err()
	case <-c.stopped:
		select {
		case r := <-p.done:
			return r, r.err
		default:
			return sendResult{}, errShuttingDown
		}
	}
}

func (c *committer) run() {
	defer c.wg.Done()
	batch := make([]*pendingSend, 0, c.maxBatch)
	for {
		select {
		case <-c.stop:
			return
		case p := <-c.queue:
			batch = append(batch[:0], p)
		}
	collect:
		for len(batch) < c.maxBatch {
			select {
			case p := <-c.queue:
				batch = append(batch, p)
			default:
				break collect
			}
		}
		c.commit(batch)
	}
}

// commitAttempts bounds how often a batch runs again after losing a race
// with another batch that stored a retry of one of its messages.
const commitAttempts = 3

func (c *committer) commit(sends []*pendingSend) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var b *appendBatch
	var err error
	for attempt := range commitAttempts {
		b = &appendBatch{sends: sends}
		err = c.db.Pipelined(ctx, func(tx *db.PipelineTx) error { return b.apply(ctx, tx, &c.kinds, attempt > 0) })
		// A stored retry passed the rules, or another batch (another worker
		// or node) stored a retry of one of ours: run again, looking first.
		if !db.IsUniqueViolation(err, "messages_sender_id_client_msg_id_key") {
			break
		}
	}
	if c.metrics != nil {
		c.metrics.batchSize.Observe(float64(len(sends)))
		c.metrics.batchTime.Observe(time.Since(start).Seconds())
	}
	if err != nil && len(sends) > 1 && db.IsDataError(err) {
		// PostgreSQL refused something one of the messages carries, and a
		// statement fails whole: the others must not fail with it. Halves
		// commit in queue order, each splitting again while it fails, so a
		// bad message costs its batch about 2·log2(n) extra transactions
		// and only the message at fault gets the error.
		c.logger.Warn("append batch refused; retrying it in halves", "messages", len(sends), "error", err)
		half := len(sends) / 2
		c.commit(sends[:half])
		c.commit(sends[half:])
		return
	}
	if err != nil {
		c.logger.Error("append batch", "messages", len(sends), "error", err)
		for _, p := range sends {
			p.done <- sendResult{err: fmt.Errorf("append messages: %w", err)}
		}
		return
	}
	for i, p := range sends {
		p.done <- b.results[i]
	}
	// After commit: a stream never sees a message the database lacks.
	c.hub.publishAll(b.events)
}

// sendKey identifies a message for idempotency.
type sendKey struct{ sender, clientMsgID string }

// conversationState is a locked conversation as a batch sees it.
type conversationState struct {
	kind    int16
	lastSeq int64
	members []db.ListMembersForAppendRow
}

// currentMembers are the users a new message reaches.
func (cs *conversationState) currentMembers() []string {
	ids := make([]string, 0, len(cs.members))
	for _, m := range cs.members {
		if m.LeftSeq == nil {
			ids = append(ids, m.UserID)
		}
	}
	return ids
}

// appendBatch is one transaction of the committer.
type appendBatch struct {
	sends   []*pendingSend
	results []sendResult
	events  []hubEvent
}

// apply runs the batch in transaction q. Retries of stored messages return
// the original, whatever the rules would say now. Retries are rare, so apply
// looks them up only among the messages the rules refuse, unless lookFirst:
// a stored retry that passes the rules fails the insert on its client
// message id, and the committer runs the batch again with lookFirst.
func (b *appendBatch) apply(ctx context.Context, tx *db.PipelineTx, kinds *kindCache, lookFirst bool) error {
	b.results = make([]sendResult, len(b.sends))
	b.events = nil

	stored := map[sendKey]db.Message{}
	if lookFirst {
		var err error
		if stored, err = findStored(ctx, tx.Queries(), b.sends); err != nil {
			return err
		}
	}
	// A retry within the batch is answered like its first copy.
	first := make(map[sendKey]int, len(b.sends))
	copies := make(map[int]int)
	var fresh []int
	var convIDs []string
	for i, p := range b.sends {
		k := sendKey{p.senderID, p.req.GetClientMsgId()}
		if m, ok := stored[k]; ok {
			b.results[i] = messageResult(m, true)
			continue
		}
		if j, ok := first[k]; ok {
			copies[i] = j
			continue
		}
		first[k] = i
		fresh = append(fresh, i)
		if !slices.Contains(convIDs, p.convID) {
			convIDs = append(convIDs, p.convID)
		}
	}
	if len(fresh) == 0 {
		return nil
	}

	// Lock the conversations, then check every message against them in
	// queue order, allocating seqs as messages pass. The lock and the reads
	// of the members go in one round trip with the transaction's BEGIN: the
	// reads run after the lock is held, each statement with a snapshot of
	// its own, so they see every change committed before it. A
	// conversation's kind never changes, so the reads choose by the kinds
	// seen before; one not seen yet is read the direct way, which serves
	// every kind.
	var groupIDs, otherIDs []string
	for _, id := range convIDs {
		if kinds.get(id) == kindGroup {
			groupIDs = append(groupIDs, id)
		} else {
			otherIDs = append(otherIDs, id)
		}
	}
	var (
		locked        []db.LockConversationsRow
		others        []db.ListMembersForAppendRow
		groupsMembers []db.ListGroupMembersForAppendRow
	)
	steps := []func(*db.Queries) error{func(q *db.Queries) (err error) {
		locked, err = q.LockConversations(ctx, convIDs)
		return err
	}}
	if len(otherIDs) > 0 {
		steps = append(steps, func(q *db.Queries) (err error) {
			others, err = q.ListMembersForAppend(ctx, otherIDs)
			return err
		})
	}
	if len(groupIDs) > 0 {
		steps = append(steps, func(q *db.Queries) (err error) {
			groupsMembers, err = q.ListGroupMembersForAppend(ctx, groupIDs)
			return err
		})
	}
	if err := tx.Run(ctx, false, steps...); err != nil {
		return fmt.Errorf("lock conversations and read members: %w", err)
	}
	convs := make(map[string]*conversationState, len(locked))
	for _, c := range locked {
		convs[c.ID] = &conversationState{kind: c.Kind, lastSeq: c.LastSeq}
		kinds.put(c.ID, c.Kind)
	}
	for _, m := range append(others, groupRows(groupsMembers)...) {
		if cs := convs[m.ConversationID]; cs != nil {
			cs.members = append(cs.members, m)
		}
	}
	var w appendWrite
	var refused []*pendingSend
	refusedAt := map[*pendingSend]int{}
	for _, i := range fresh {
		p := b.sends[i]
		me, err := 0, error(errConversationNotFound)
		cs := convs[p.convID]
		if cs != nil {
			me, err = admit(p.senderID, cs, p.req)
		}
		if err != nil {
			b.results[i].err = err
			refused = append(refused, p)
			refusedAt[p] = i
			continue
		}
		cs.lastSeq++
		cs.members[me].SentCount++
		w.add(i, p, cs.lastSeq)
	}
	if !lookFirst && len(refused) > 0 {
		found, err := findStored(ctx, tx.Queries(), refused)
		if err != nil {
			return err
		}
		for _, p := range refused {
			if m, ok := found[sendKey{p.senderID, p.req.GetClientMsgId()}]; ok {
				b.results[refusedAt[p]] = messageResult(m, true)
			}
		}
	}
	if len(w.params.Seqs) == 0 {
		b.copyResults(copies)
		return nil
	}
	for _, id := range convIDs {
		if cs := convs[id]; cs != nil {
			w.params.ConvIds = append(w.params.ConvIds, id)
			w.params.ConvLastSeqs = append(w.params.ConvLastSeqs, cs.lastSeq)
		}
	}
	// The writes and the commit go in one round trip.
	var rows []db.Message
	steps = []func(*db.Queries) error{func(q *db.Queries) (err error) {
		rows, err = q.AppendMessages(ctx, w.params)
		return err
	}}
	if len(w.media.MediaIds) > 0 {
		steps = append(steps, func(q *db.Queries) error { return q.InsertMessageMedia(ctx, w.media) })
	}
	if err := tx.Run(ctx, true, steps...); err != nil {
		return fmt.Errorf("append messages: %w", err)
	}
	bySeq := make(map[string]map[int64]db.Message, len(convIDs))
	for _, r := range rows {
		if bySeq[r.ConversationID] == nil {
			bySeq[r.ConversationID] = make(map[int64]db.Message)
		}
		bySeq[r.ConversationID][r.Seq] = db.Message(r)
	}
	recipients := make(map[string][]string, len(convs))
	for n, i := range w.sends {
		p := b.sends[i]
		m, ok := bySeq[p.convID][w.params.Seqs[n]]
		if !ok {
			return fmt.Errorf("append messages: seq %d of %s not returned", w.params.Seqs[n], p.convID)
		}
		b.results[i] = messageResult(m, false)
		if b.results[i].err != nil {
			continue
		}
		if recipients[p.convID] == nil {
			recipients[p.convID] = convs[p.convID].currentMembers()
		}
		b.events = append(b.events, hubEvent{
			users: recipients[p.convID],
			ev:    &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: b.results[i].msg}},
		})
	}
	b.copyResults(copies)
	return nil
}

// groupRows converts group members to the rows admit reads; the probes
// only direct conversations need stay empty.
func groupRows(rows []db.ListGroupMembersForAppendRow) []db.ListMembersForAppendRow {
	out := make([]db.ListMembersForAppendRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, db.ListMembersForAppendRow{
			ConversationID: r.ConversationID, UserID: r.UserID, JoinedSeq: r.JoinedSeq, ClearedSeq: r.ClearedSeq,
			SentCount: r.SentCount, LeftSeq: r.LeftSeq, Role: r.Role, MuteUntil: r.MuteUntil,
			MuteAll: r.MuteAll, DissolvedAt: r.DissolvedAt,
		})
	}
	return out
}

// kindCache remembers the kinds of conversations batches have locked; a
// conversation's kind never changes.
type kindCache struct {
	mu    sync.Mutex
	kinds map[string]int16
}

// maxCachedKinds bounds the cache at a few megabytes.
const maxCachedKinds = 100_000

// get returns the kind of conversation id, or 0 when it is not known.
func (c *kindCache) get(id string) int16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kinds[id]
}

func (c *kindCache) put(id string, kind int16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kinds == nil || len(c.kinds) >= maxCachedKinds {
		c.kinds = make(map[string]int16)
	}
	c.kinds[id] = kind
}

// findStored returns the stored messages among sends, by sender and client
// message id.
func findStored(ctx context.Context, q *db.Queries, sends []*pendingSend) (map[sendKey]db.Message, error) {
	senders := make([]string, 0, len(sends))
	ids := make([]string, 0, len(sends))
	for _, p := range sends {
		senders = append(senders, p.senderID)
		ids = append(ids, p.req.GetClientMsgId())
	}
	found, err := q.FindSends(ctx, db.FindSendsParams{SenderIds: senders, ClientMsgIds: ids})
	if err != nil {
		return nil, fmt.Errorf("find retried sends: %w", err)
	}
	stored := make(map[sendKey]db.Message, len(found))
	for _, m := range found {
		if m.SenderID != nil && m.ClientMsgID != nil {
			stored[sendKey{*m.SenderID, *m.ClientMsgID}] = m
		}
	}
	return stored, nil
}

// copyResults answers the retries within a batch like their first copies.
func (b *appendBatch) copyResults(copies map[int]int) {
	for i, j := range copies {
		b.results[i] = b.results[j]
		if b.results[i].err == nil {
			b.results[i].duplicate = true
		}
	}
}

func messageResult(m db.Message, duplicate bool) sendResult {
	out, err := messageToProto(m)
	return sendResult{msg: out, duplicate: duplicate, err: err}
}

// appendWrite gathers the arrays of AppendMessages.
type appendWrite struct {
	params db.AppendMessagesParams
	media  db.InsertMessageMediaParams
	sends  []int // batch index of each message, in params order
	marks  map[sendKey]int
}

func (w *appendWrite) add(i int, p *pendingSend, seq int64) {
	w.sends = append(w.sends, i)
	w.params.ConversationIds = append(w.params.ConversationIds, p.convID)
	w.params.Seqs = append(w.params.Seqs, seq)
	w.params.SenderIds = append(w.params.SenderIds, p.senderID)
	w.params.ClientMsgIds = append(w.params.ClientMsgIds, p.req.GetClientMsgId())
	w.params.Kinds = append(w.params.Kinds, p.kind)
	w.params.Contents = append(w.params.Contents, p.content)
	w.params.ReplyToSeqs = append(w.params.ReplyToSeqs, p.req.GetReplyToSeq())
	w.params.Mentions = append(w.params.Mentions, strings.Join(p.req.GetMentionUserIds(), ","))
	for _, id := range p.media {
		w.media.MediaIds = append(w.media.MediaIds, id)
		w.media.ConversationIds = append(w.media.ConversationIds, p.convID)
		w.media.Seqs = append(w.media.Seqs, seq)
	}
	// Sending reads everything before it: one cursor move per sender and
	// conversation, to the sender's last seq in the batch.
	if w.marks == nil {
		w.marks = make(map[sendKey]int)
	}
	k := sendKey{p.senderID, p.convID}
	if n, ok := w.marks[k]; ok {
		w.params.MarkSeqs[n] = seq
		w.params.MarkCounts[n]++
		return
	}
	w.marks[k] = len(w.params.MarkSeqs)
	w.params.MarkConvIds = append(w.params.MarkConvIds, p.convID)
	w.params.MarkUserIds = append(w.params.MarkUserIds, p.senderID)
	w.params.MarkSeqs = append(w.params.MarkSeqs, seq)
	w.params.MarkCounts = append(w.params.MarkCounts, 1)
}
