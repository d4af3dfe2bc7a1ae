package server

import (
	"sync"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// hub fans live events out to the Subscribe streams open on this node. It is
// a doorbell, not a record: a stream that misses an event (its buffer
// overflowed, or a node's event never arrived) recovers from PostgreSQL.
//
// Publish never blocks. Each stream has a bounded queue, which takes memory
// only for the events waiting in it (an idle stream holds none); a stream
// that falls that far behind is cut off (its done channel closes with reason
// overflowed) and its client resumes from its cursors, so one slow reader
// costs neither the senders nor the other streams, and memory stays bounded.
type hub struct {
	buffer int
	// relay, when set, carries every publish and endSessions to the other
	// nodes; local delivery does not wait for it.
	relay *relay

	mu    sync.Mutex
	users map[string]map[*subscription]struct{}
}

func newHub(buffer int) *hub {
	return &hub{buffer: buffer, users: make(map[string]map[*subscription]struct{})}
}

// endReason says why the hub ended a subscription.
type endReason int

const (
	endNone       endReason = iota
	endOverflowed           // the stream could not keep up
	endRevoked              // its session was revoked
)

// subscription is one stream's registration with the hub.
type subscription struct {
	userID    string
	sessionID string
	done      chan struct{}
	// ready holds a token while queue has events. The queue grows with the
	// events waiting, up to max, so an idle stream holds no buffer at all.
	ready chan struct{}
	max   int
	mu    sync.Mutex
	queue []*parleyv1.SubscribeResponse

	// onCut, when set, runs in its own goroutine when the hub cuts the
	// stream off (overflow or revocation), not when it ends normally.
	onCut func()

	once   sync.Once
	reason endReason // written before done closes
}

// offer queues ev for the stream, or reports false when max events are
// already waiting.
func (s *subscription) offer(ev *parleyv1.SubscribeResponse) bool {
	s.mu.Lock()
	if len(s.queue) >= s.max {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default: // a token is already there
	}
	return true
}

// take returns the waiting events, oldest first, and empties the queue.
func (s *subscription) take() []*parleyv1.SubscribeResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// waiting is how many events are queued.
func (s *subscription) waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

func (s *subscription) end(r endReason) {
	s.once.Do(func() {
		s.reason = r
		close(s.done)
		if r != endNone && s.onCut != nil {
			go s.onCut() // the hub's lock may be held: never block it
		}
	})
}

// subscribe registers a stream of userID's session, unless the user already
// has maxPerUser streams on this node. Call unsubscribe when the stream ends.
// onCut, if not nil, runs when the hub cuts the stream off.
func (h *hub) subscribe(userID, sessionID string, maxPerUser int, onCut func()) (*subscription, bool) {
	s := &subscription{
		userID:    userID,
		sessionID: sessionID,
		onCut:     onCut,
		ready:     make(chan struct{}, 1),
		max:       h.buffer,
		done:      make(chan struct{}),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.users[userID]
	if maxPerUser > 0 && len(subs) >= maxPerUser {
		return nil, false
	}
	if subs == nil {
		subs = make(map[*subscription]struct{})
		h.users[userID] = subs
	}
	subs[s] = struct{}{}
	return s, true
}

func (h *hub) unsubscribe(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if subs := h.users[s.userID]; subs != nil {
		delete(subs, s)
		if len(subs) == 0 {
			delete(h.users, s.userID)
		}
	}
	s.end(endNone)
}

// publish delivers ev to every stream of every user in userIDs, on this node
// and through the relay on the others, skipping the stream of skipSession (a
// device need not hear its own action). The event is shared, not copied:
// streams must not modify it.
func (h *hub) publish(userIDs []string, skipSession string, ev *parleyv1.SubscribeResponse) {
	h.publishAll([]hubEvent{{users: userIDs, skip: skipSession, ev: ev}})
}

// hubEvent is one publish: an event, who gets it, and which session not.
type hubEvent struct {
	users []string
	skip  string
	ev    *parleyv1.SubscribeResponse
}

// publishAll publishes events in order, relaying them to the other nodes in
// one round trip.
func (h *hub) publishAll(evs []hubEvent) {
	for _, e := range evs {
		h.deliver(e.users, e.skip, e.ev)
	}
	if h.relay == nil {
		return
	}
	envs := make([]envelope, 0, len(evs))
	for _, e := range evs {
		if wire, err := proto.Marshal(e.ev); err == nil {
			envs = append(envs, envelope{Users: e.users, Skip: e.skip, EventWire: wire})
		}
	}
	h.relay.send(envs...)
}

// deliver is publish on this node only.
func (h *hub) deliver(userIDs []string, skipSession string, ev *parleyv1.SubscribeResponse) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range userIDs {
		for s := range h.users[u] {
			if skipSession != "" && s.sessionID == skipSession {
				continue
			}
			if !s.offer(ev) {
				s.end(endOverflowed)
			}
		}
	}
}

// endSessions ends the streams of the given sessions on every node, for
// logout and revocation.
func (h *hub) endSessions(userID string, sessionIDs ...string) {
	h.endLocal(userID, sessionIDs...)
	if h.relay != nil && len(sessionIDs) > 0 {
		h.relay.send(envelope{EndUser: userID, Sessions: sessionIDs})
	}
}

// sessions returns the sessions with a stream on this node, each with its user.
func (h *hub) sessions() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]string)
	for userID, subs := range h.users {
		for s := range subs {
			out[s.sessionID] = userID
		}
	}
	return out
}

// endLocal is endSessions on this node only.
func (h *hub) endLocal(userID string, sessionIDs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.users[userID] {
		for _, id := range sessionIDs {
			if s.sessionID == id {
				s.end(endRevoked)
			}
		}
	}
}
