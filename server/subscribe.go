package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

const (
	// backlogPage is how many entries one catch-up read takes: 2000 rows
	// of chat text are about half a megabyte, read in a few milliseconds.
	backlogPage = 2000
	// firstBacklogPage is the first read's size: small, so that sending
	// starts at once while the next, full page is read.
	firstBacklogPage = maxBatchEntries
	// sessionCheckInterval bounds how long a stream outlives its session's
	// revocation on another node (the session cache adds its TTL).
	sessionCheckInterval = time.Second
	defaultSyncLimit     = 500
	// streamEndGrace is how long a stream the hub ended may take to write
	// its final status before it is reset.
	streamEndGrace = time.Second
)

// streamView is what one stream has delivered of one conversation.
type streamView struct {
	lo        int64 // first seq the member may see
	delivered int64 // last seq delivered (or the client already had)
	joined    int64 // the membership's joined_seq: another one means the user rejoined
	end       int64 // left_seq once the membership ended, 0 while it lasts
	group     bool  // a group's: membership can end and start again
}

// newStreamView is the view of a membership whose entries up to delivered
// the client has.
func newStreamView(m db.Membership, delivered int64) *streamView {
	lo, _ := visibleRange(m)
	v := &streamView{lo: lo, delivered: max(delivered, lo-1), joined: m.JoinedSeq, group: m.Kind == kindGroup}
	if m.LeftSeq != nil {
		v.end = *m.LeftSeq
	}
	return v
}

// catchUp is the state of one Subscribe stream, written by its one goroutine.
type catchUp struct {
	s      *messagesService
	userID string
	send   func(*parleyv1.SubscribeResponse) error
	views  map[string]*streamView
	// batch sends catch-up entries as message batches.
	batch bool
	// wire sends catch-up entries encoded from their rows, for a stream
	// whose codec is binary.
	wire bool
}

// Subscribe implements gap-free resume: register with the hub first, then
// read the backlog from PostgreSQL, then drain live events, dropping what the
// backlog already covered and reading any gap a live event reveals. Every
// entry after the client's cursors is delivered exactly once, in seq order per
// conversation.
//
// Most streams sit idle for hours, and each holds its handler goroutine, whose
// stack is most of an idle stream's memory. The work is split so that the
// frames on that stack while it waits are small: open does the catch-up in
// its own frame and returns, and wait selects with almost no locals. The
// runtime halves a stack at GC when a quarter of it is enough, so a shallow
// wait lets an idle stream's stack shrink back after catch-up grew it.
func (s *messagesService) Subscribe(ctx context.Context, req *parleyv1.SubscribeRequest, stream *connect.ServerStream[parleyv1.SubscribeResponse]) error {
	st, err := s.openStream(ctx, req, stream)
	if err != nil {
		return err
	}
	return st.close(st.wait(ctx))
}

// liveStream is one Subscribe stream past its catch-up.
type liveStream struct {
	cu       *catchUp
	sub      *subscription
	cutter   *streamCutter
	beat     *time.Ticker
	lastBeat time.Time
}

// openStream registers the stream with the hub and presence and sends the
// catch-up. On error it has undone all of that.
//
//go:noinline
func (s *messagesService) openStream(ctx context.Context, req *parleyv1.SubscribeRequest, stream *connect.ServerStream[parleyv1.SubscribeResponse]) (_ *liveStream, err error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	st := &liveStream{}
	// A client that stops reading fills its HTTP/2 flow-control window, and
	// then a write blocks until it reads again. When the hub cuts the stream
	// off (its buffer overflowed, or its session was revoked), a blocked
	// write must not keep the handler: a write deadline fails it. A client
	// that reads gets the final status within the grace period; one whose
	// window stays full sees the stream reset, and resumes from its cursors.
	var onCut func()
	if rc := responseController(ctx); rc != nil {
		st.cutter = &streamCutter{rc: rc}
		onCut = st.cutter.cut
	}
	sub, ok := s.hub.subscribe(c.UserID, c.SessionID, s.cfg.MaxStreamsPerUser, onCut)
	if !ok {
		if st.cutter != nil {
			st.cutter.finish()
		}
		return nil, errTooManyStreams
	}
	st.sub = sub
	s.presence.connect(ctx, c.UserID)
	st.cu = &catchUp{
		s: s, userID: c.UserID, send: stream.Send, views: make(map[string]*streamView),
		batch: req.GetBatchCatchUp(), wire: binaryCodec(stream.Conn().RequestHeader().Get("Content-Type")),
	}
	defer func() {
		if err != nil {
			err = st.close(err)
		}
	}()
	st.lastBeat = time.Now()
	if err := st.cu.backlog(ctx, req.GetCursors()); err != nil {
		return nil, err
	}
	online, err := s.presence.onlinePeers(ctx, c.UserID)
	if err != nil {
		return nil, err
	}
	for _, ev := range online {
		if err := stream.Send(ev); err != nil {
			return nil, err
		}
	}
	if err := st.cu.heartbeat(nil); err != nil {
		return nil, err
	}
	st.beat = time.NewTicker(s.heartbt)
	return st, nil
}

// wait delivers live events and heartbeats until the stream ends (the
// session watch ends it when its session does). Each case's work is a call, so that this frame stays small.
func (st *liveStream) wait(ctx context.Context) error {
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-st.sub.done:
			return nil
		case <-st.sub.ready:
			err = st.deliver(ctx)
		case now := <-st.beat.C:
			err = st.heartbeat(ctx, now)
		}
		if err != nil {
			return err
		}
	}
}

//go:noinline
func (st *liveStream) deliver(ctx context.Context) error {
	for _, ev := range st.sub.take() {
		if err := st.cu.live(ctx, ev); err != nil {
			return err
		}
	}
	return nil
}

// heartbeat reads positions from PostgreSQL, not the hub, so it also heals
// an event the hub never delivered.
//
//go:noinline
func (st *liveStream) heartbeat(ctx context.Context, now time.Time) error {
	active, err := st.cu.s.db.ActiveSince(ctx, db.ActiveSinceParams{UserID: st.cu.userID, LastMessageAt: st.lastBeat.Add(-time.Second)})
	if err != nil {
		return fmt.Errorf("read positions: %w", err)
	}
	st.lastBeat = now
	for _, m := range active {
		if err := st.cu.follow(ctx, m); err != nil {
			return err
		}
	}
	return st.cu.heartbeat(active)
}

// close undoes openStream and turns the hub's reason for ending the stream,
// if it ended it, into the stream's error.
//
//go:noinline
func (st *liveStream) close(err error) error {
	s := st.cu.s
	if st.beat != nil {
		st.beat.Stop()
	}
	s.presence.disconnect(st.cu.userID)
	s.hub.unsubscribe(st.sub)
	if st.cutter != nil {
		st.cutter.finish()
	}
	select {
	case <-st.sub.done:
		switch st.sub.reason {
		case endOverflowed:
			return errSlowSubscriber
		case endRevoked:
			return errStreamSessionEnded
		}
	default:
	}
	return err
}

// backlog sends what the client lacks: entries after each cursor, new
// conversations with their latest page, and removals.
func (cu *catchUp) backlog(ctx context.Context, cursors []*parleyv1.Cursor) error {
	have := make(map[string]int64, len(cursors))
	for _, c := range cursors {
		have[c.GetConversationId()] = c.GetSeq()
	}
	memberships, err := cu.s.db.ListMemberships(ctx, cu.userID)
	if err != nil {
		return fmt.Errorf("list memberships: %w", err)
	}
	// Oldest activity first, so the client's list fills in order.
	slices.SortFunc(memberships, func(a, b db.Membership) int { return a.LastMessageAt.Compare(b.LastMessageAt) })
	for _, m := range memberships {
		cur, known := have[m.ConversationID]
		delete(have, m.ConversationID)
		if !known {
			if err := cu.added(ctx, m); err != nil {
				return err
			}
			continue
		}
		_, hi := visibleRange(m)
		cu.views[m.ConversationID] = newStreamView(m, cur)
		if hi > cur {
			view, err := cu.s.conversationView(ctx, m)
			if err != nil {
				return err
			}
			if err := cu.send(conversationUpdated(view)); err != nil {
				return err
			}
			if err := cu.advance(ctx, m.ConversationID, hi); err != nil {
				return err
			}
		}
	}
	for id := range have {
		if err := cu.send(&parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Conversation{Conversation: &parleyv1.ConversationEvent{
			Change: &parleyv1.ConversationEvent_Removed{Removed: &parleyv1.ConversationRemoved{ConversationId: id}},
		}}}); err != nil {
			return err
		}
	}
	return nil
}

// added sends a conversation new to the client with its latest page.
func (cu *catchUp) added(ctx context.Context, m db.Membership) error {
	lo, hi := visibleRange(m)
	rows, err := cu.s.db.ListMessagesBefore(ctx, db.ListMessagesBeforeParams{
		ConversationID: m.ConversationID, BeforeSeq: hi + 1, FromSeq: lo, MaxRows: latestPageOnSubscribe,
	})
	if err != nil {
		return fmt.Errorf("latest page: %w", err)
	}
	slices.Reverse(rows)
	msgs, err := cu.s.userMessages(ctx, cu.userID, rows)
	if err != nil {
		return err
	}
	view, err := cu.s.conversationView(ctx, m)
	if err != nil {
		return err
	}
	cu.views[m.ConversationID] = newStreamView(m, hi)
	return cu.send(&parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Conversation{Conversation: &parleyv1.ConversationEvent{
		Change: &parleyv1.ConversationEvent_Added{Added: &parleyv1.ConversationAdded{Conversation: view, LatestMessages: msgs}},
	}}})
}

// advance delivers every entry of a conversation up to seq that this stream
// has not delivered, reading them from PostgreSQL.
func (cu *catchUp) advance(ctx context.Context, convID string, upTo int64) error {
	v, ok := cu.views[convID]
	if !ok {
		m, err := cu.s.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: convID, UserID: cu.userID})
		if db.IsNoRows(err) {
			return nil // not (or no longer) the user's
		}
		if err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		return cu.added(ctx, m)
	}
	if v.end > 0 && upTo > v.end {
		// Past the end of the user's membership: nothing more, unless they
		// rejoined, which starts the conversation over from the new joined_seq.
		m, err := cu.s.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: convID, UserID: cu.userID})
		if err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		if m.JoinedSeq != v.joined {
			return cu.added(ctx, m)
		}
		upTo = v.end
	}
	if v.delivered >= upTo {
		return nil
	}
	// A long catch-up reads the next page while it sends this one.
	ctx, cancel := context.WithCancel(ctx)
	pages := make(chan entryPage, 1)
	go cu.readPages(ctx, convID, v.delivered, upTo, pages)
	defer func() {
		cancel()
		for range pages { // wait for the reader
		}
	}()
	for p := range pages {
		if p.err != nil {
			return p.err
		}
		if err := cu.sendEntries(p); err != nil {
			return err
		}
		v.delivered = p.last
	}
	return nil
}

// entryPage is one page of catch-up entries, or the error that ended them:
// as messages, or for a binary stream as their encodings (see
// appendEntryWire).
type entryPage struct {
	msgs []*parleyv1.Message
	wire [][]byte
	last int64 // the seq of the last entry
	err  error
}

// readPages reads convID's entries after < seq ≤ upTo as the user sees them,
// page by page into pages, which it closes when done.
func (cu *catchUp) readPages(ctx context.Context, convID string, after, upTo int64, pages chan<- entryPage) {
	defer close(pages)
	for limit := int32(firstBacklogPage); after < upTo; limit = backlogPage {
		var p entryPage
		rows, err := cu.s.db.ListUserEntriesAfter(ctx, db.ListUserEntriesAfterParams{
			UserID: cu.userID, ConversationID: convID, AfterSeq: after, UntilSeq: upTo, MaxRows: limit,
		})
		if err != nil {
			p.err = fmt.Errorf("read backlog: %w", err)
		}
		if len(rows) == 0 && err == nil {
			return
		}
		if err == nil {
			p.last = rows[len(rows)-1].Message.Seq
			if cu.wire {
				p.wire = entriesWire(rows)
			} else {
				p.msgs, p.err = entriesToProto(rows)
			}
		}
		select {
		case pages <- p:
		case <-ctx.Done():
			return
		}
		if p.err != nil {
			return
		}
		after = p.last
	}
}

const (
	// maxBatchEntries and maxBatchBytes bound one message batch, well
	// inside the 4 MiB a gRPC client accepts by default.
	maxBatchEntries = 256
	maxBatchBytes   = 1 << 20
)

func entriesToProto(rows []db.ListUserEntriesAfterRow) ([]*parleyv1.Message, error) {
	msgs := make([]*parleyv1.Message, len(rows))
	for i, r := range rows {
		m, err := messageToProto(r.Message)
		if err != nil {
			return nil, err
		}
		if r.Deleted {
			markDeleted(m)
		}
		msgs[i] = m
	}
	return msgs, nil
}

// entriesWire encodes rows into one buffer, returning each entry's slice
// of it.
func entriesWire(rows []db.ListUserEntriesAfterRow) [][]byte {
	size := 0
	for _, r := range rows {
		size += len(r.Message.Content) + 192 // ids, seqs, time: a little less
	}
	buf := make([]byte, 0, size)
	out := make([][]byte, len(rows))
	for i, r := range rows {
		start := len(buf)
		buf = appendEntryWire(buf, r.Message, r.Deleted)
		out[i] = buf[start:len(buf):len(buf)]
	}
	return out
}

// sendEntries sends a page of consecutive entries of one conversation: as
// batches to a stream that asked for them, else one event each.
func (cu *catchUp) sendEntries(p entryPage) error {
	n := len(p.msgs)
	one := func(i int) *parleyv1.SubscribeResponse {
		return &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: p.msgs[i]}}
	}
	size := func(i int) int { return proto.Size(p.msgs[i]) }
	batch := func(lo, hi int) *parleyv1.SubscribeResponse {
		return &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_MessageBatch{
			MessageBatch: &parleyv1.MessageBatch{Messages: p.msgs[lo:hi]},
		}}
	}
	if p.wire != nil {
		n = len(p.wire)
		one = func(i int) *parleyv1.SubscribeResponse { return wireEvent(wireEventMessage, p.wire[i]) }
		size = func(i int) int { return len(p.wire[i]) }
		batch = func(lo, hi int) *parleyv1.SubscribeResponse {
			c := 0
			for _, e := range p.wire[lo:hi] {
				c += len(e) + protowire.SizeVarint(uint64(len(e))) + 1
			}
			b := make([]byte, 0, c)
			for _, e := range p.wire[lo:hi] {
				b = protowire.AppendTag(b, wireBatchMessages, protowire.BytesType)
				b = protowire.AppendBytes(b, e)
			}
			return wireEvent(wireEventMessageBatch, b)
		}
	}
	if !cu.batch {
		for i := range n {
			if err := cu.send(one(i)); err != nil {
				return err
			}
		}
		return nil
	}
	for lo := 0; lo < n; {
		hi, total := lo, 0
		for hi < n && hi-lo < maxBatchEntries {
			total += size(hi)
			if hi > lo && total > maxBatchBytes {
				break
			}
			hi++
		}
		if err := cu.send(batch(lo, hi)); err != nil {
			return err
		}
		lo = hi
	}
	return nil
}

// follow brings the stream up to date with a membership read from
// PostgreSQL: a conversation new to the stream, or rejoined, is sent whole;
// otherwise its entries up to the visible end are delivered, and an ended
// membership bounds the stream at its left_seq.
func (cu *catchUp) follow(ctx context.Context, m db.Membership) error {
	v, ok := cu.views[m.ConversationID]
	if !ok || m.JoinedSeq != v.joined {
		return cu.added(ctx, m)
	}
	if m.LeftSeq != nil {
		v.end = *m.LeftSeq
	}
	return cu.advance(ctx, m.ConversationID, m.VisibleLastSeq)
}

// refresh answers a conversation-updated event. The hub carries it as a
// doorbell (a group change concerns every member, each with their own
// view), so the stream sends its user's own view, read from PostgreSQL.
func (cu *catchUp) refresh(ctx context.Context, convID string) error {
	m, err := cu.s.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: convID, UserID: cu.userID})
	if db.IsNoRows(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get membership: %w", err)
	}
	if v, ok := cu.views[convID]; !ok || m.JoinedSeq != v.joined {
		return cu.added(ctx, m)
	}
	if err := cu.follow(ctx, m); err != nil {
		return err
	}
	view, err := cu.s.conversationView(ctx, m)
	if err != nil {
		return err
	}
	return cu.send(conversationUpdated(view))
}

// live handles one event from the hub.
func (cu *catchUp) live(ctx context.Context, ev *parleyv1.SubscribeResponse) error {
	if upd := ev.GetConversation().GetUpdated(); upd != nil {
		return cu.refresh(ctx, upd.GetId())
	}
	msg := ev.GetMessage()
	if msg == nil {
		return cu.send(ev)
	}
	v, ok := cu.views[msg.GetConversationId()]
	switch {
	case !ok:
		// A conversation born after the stream started: its latest page
		// includes this message.
		return cu.advance(ctx, msg.GetConversationId(), msg.GetSeq())
	case msg.GetSeq() <= v.delivered:
		return nil // the backlog already carried it
	case msg.GetSeq() == v.delivered+1 && (v.end == 0 || msg.GetSeq() <= v.end):
		v.delivered = msg.GetSeq()
		return cu.send(ev)
	case v.group:
		// A seq jumped in a group: the user may have left or rejoined in
		// between, in an event this stream missed, so the membership read
		// with the gap decides what the gap may carry.
		m, err := cu.s.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: msg.GetConversationId(), UserID: cu.userID})
		if err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		return cu.follow(ctx, m)
	default:
		// A seq jumped: read the gap, this message included, from the record.
		return cu.advance(ctx, msg.GetConversationId(), msg.GetSeq())
	}
}

func (cu *catchUp) heartbeat(active []db.Membership) error {
	hb := &parleyv1.HeartbeatEvent{
		ServerTime: timestamp(time.Now()),
		Interval:   durationpb.New(cu.s.heartbt),
	}
	for _, m := range active {
		hb.Positions = append(hb.Positions, &parleyv1.Cursor{ConversationId: m.ConversationID, Seq: m.VisibleLastSeq})
	}
	return cu.send(&parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Heartbeat{Heartbeat: hb}})
}

func conversationUpdated(c *parleyv1.Conversation) *parleyv1.SubscribeResponse {
	return &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Conversation{Conversation: &parleyv1.ConversationEvent{
		Change: &parleyv1.ConversationEvent_Updated{Updated: c},
	}}}
}

// Sync is Subscribe's catch-up as pages, for clients that poll or batch.
func (s *messagesService) Sync(ctx context.Context, req *parleyv1.SyncRequest) (*parleyv1.SyncResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	budget := int(req.GetLimit())
	if budget == 0 {
		budget = defaultSyncLimit
	}
	have := make(map[string]int64, len(req.GetCursors()))
	for _, cur := range req.GetCursors() {
		have[cur.GetConversationId()] = cur.GetSeq()
	}
	memberships, err := s.db.ListMemberships(ctx, c.UserID)
	if err != nil {
		return nil, fmt.Errorf("list memberships: %w", err)
	}
	slices.SortFunc(memberships, func(a, b db.Membership) int { return a.LastMessageAt.Compare(b.LastMessageAt) })
	res := &parleyv1.SyncResponse{}
	for _, m := range memberships {
		cur, known := have[m.ConversationID]
		delete(have, m.ConversationID)
		lo, hi := visibleRange(m)
		var rows []db.Message
		switch {
		case !known:
			if budget <= 0 {
				res.HasMore = true
				continue
			}
			rows, err = s.db.ListMessagesBefore(ctx, db.ListMessagesBeforeParams{
				ConversationID: m.ConversationID, BeforeSeq: hi + 1, FromSeq: lo, MaxRows: int32(min(budget, latestPageOnSubscribe)),
			})
			slices.Reverse(rows)
		case hi > cur:
			if budget <= 0 {
				res.HasMore = true
				continue
			}
			rows, err = s.db.ListMessagesAfter(ctx, db.ListMessagesAfterParams{
				ConversationID: m.ConversationID, AfterSeq: max(cur, lo-1), UntilSeq: hi, MaxRows: int32(budget),
			})
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read messages: %w", err)
		}
		budget -= len(rows)
		pos := cur
		if !known {
			pos = hi // the client starts from the latest page
		} else if len(rows) > 0 {
			pos = rows[len(rows)-1].Seq
		}
		if known && pos < hi {
			res.HasMore = true
		}
		msgs, err := s.userMessages(ctx, c.UserID, rows)
		if err != nil {
			return nil, err
		}
		view, err := s.conversationView(ctx, m)
		if err != nil {
			return nil, err
		}
		res.Messages = append(res.Messages, msgs...)
		res.Conversations = append(res.Conversations, view)
		res.Positions = append(res.Positions, &parleyv1.Cursor{ConversationId: m.ConversationID, Seq: pos})
	}
	for id := range have {
		res.RemovedConversationIds = append(res.RemovedConversationIds, id)
	}
	slices.Sort(res.RemovedConversationIds)
	return res, nil
}

// streamCutter sets the write deadline of a stream the hub cut off, but only
// while its handler runs: net/http forbids touching a response after that.
type streamCutter struct {
	rc   *http.ResponseController
	mu   sync.Mutex
	over bool
}

func (c *streamCutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.over {
		_ = c.rc.SetWriteDeadline(time.Now().Add(streamEndGrace))
	}
}

// finish marks the handler done; call it before the handler returns.
func (c *streamCutter) finish() {
	c.mu.Lock()
	c.over = true
	c.mu.Unlock()
}

type responseControllerKey struct{}

// withResponseController lets a handler reach its HTTP response beneath
// Connect, for write deadlines.
func withResponseController(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), responseControllerKey{}, http.NewResponseController(w))
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

func responseController(ctx context.Context) *http.ResponseController {
	rc, _ := ctx.Value(responseControllerKey{}).(*http.ResponseController)
	return rc
}
