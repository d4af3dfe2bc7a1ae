package server

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// presenceTTL bounds how long a crashed node's users still look online: each
// node refreshes its entries at a third of it.
const presenceTTL = 90 * time.Second

// presence knows who is online: a user is online while any of their
// Subscribe streams is open on any node. Each node counts its own streams;
// with Redis, each node also records its online users in a hash per user
// (field: node, value: expiry), so a node can tell whether a user who just
// left it is still online elsewhere.
type presence struct {
	db     *db.DB
	hub    *hub
	relay  *relay // nil on a single node
	logger *slog.Logger

	mu    sync.Mutex
	local map[string]int // user id → streams open on this node

	cancel context.CancelFunc
	done   chan struct{}
}

func newPresence(d *db.DB, h *hub, r *relay, logger *slog.Logger) *presence {
	ctx, cancel := context.WithCancel(context.Background())
	p := &presence{db: d, hub: h, relay: r, logger: logger, local: make(map[string]int), cancel: cancel, done: make(chan struct{})}
	if r == nil {
		close(p.done)
		return p
	}
	go p.refresh(ctx)
	return p
}

// Close stops refreshing this node's entries.
func (p *presence) Close() {
	p.cancel()
	<-p.done
}

func presenceKey(userID string) string { return "parley:presence:" + userID }

// refresh renews this node's entries before they expire.
func (p *presence) refresh(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(presenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.mu.Lock()
			users := make([]string, 0, len(p.local))
			for u := range p.local {
				users = append(users, u)
			}
			p.mu.Unlock()
			for _, u := range users {
				p.record(ctx, u)
			}
		}
	}
}

func (p *presence) record(ctx context.Context, userID string) {
	c := p.relay.client
	expiry := strconv.FormatInt(time.Now().Add(presenceTTL).Unix(), 10)
	for _, err := range []error{
		c.Do(ctx, c.B().Hset().Key(presenceKey(userID)).FieldValue().FieldValue(p.relay.node, expiry).Build()).Error(),
		c.Do(ctx, c.B().Expire().Key(presenceKey(userID)).Seconds(int64(presenceTTL/time.Second)).Build()).Error(),
	} {
		if err != nil {
			p.logger.Warn("record presence in redis", "user_id", userID, "error", err)
			return
		}
	}
}

// connect counts a stream of userID that opened on this node, and tells the
// user's peers when it is the user's first here.
func (p *presence) connect(ctx context.Context, userID string) {
	p.mu.Lock()
	p.local[userID]++
	first := p.local[userID] == 1
	p.mu.Unlock()
	if !first {
		return
	}
	if p.relay != nil {
		elsewhere := p.onlineElsewhere(ctx, userID)
		p.record(ctx, userID)
		if elsewhere {
			return // the peers know already
		}
	}
	p.announce(ctx, &parleyv1.PresenceEvent{UserId: userID, Online: true})
}

// disconnect uncounts a stream. When the user has no stream left anywhere,
// their last-seen time is stored and their peers told.
func (p *presence) disconnect(userID string) {
	p.mu.Lock()
	p.local[userID]--
	last := p.local[userID] <= 0
	if last {
		delete(p.local, userID)
	}
	p.mu.Unlock()
	if !last {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p.relay != nil {
		c := p.relay.client
		if err := c.Do(ctx, c.B().Hdel().Key(presenceKey(userID)).Field(p.relay.node).Build()).Error(); err != nil {
			p.logger.Warn("clear presence in redis", "user_id", userID, "error", err)
		}
		if p.onlineElsewhere(ctx, userID) {
			return
		}
	}
	now := time.Now()
	if err := p.db.SetLastSeen(ctx, db.SetLastSeenParams{ID: userID, LastSeenAt: &now}); err != nil {
		p.logger.Warn("store last seen", "user_id", userID, "error", err)
	}
	p.announce(ctx, &parleyv1.PresenceEvent{UserId: userID, Online: false, LastSeenTime: timestamp(now)})
}

// onlineElsewhere reports whether another node has a live entry for userID.
func (p *presence) onlineElsewhere(ctx context.Context, userID string) bool {
	c := p.relay.client
	entries, err := c.Do(ctx, c.B().Hgetall().Key(presenceKey(userID)).Build()).AsStrMap()
	if err != nil {
		return false
	}
	now := time.Now().Unix()
	for node, exp := range entries {
		if until, err := strconv.ParseInt(exp, 10, 64); err == nil && node != p.relay.node && until > now {
			return true
		}
	}
	return false
}

// isOnline reports whether userID has a stream open on any node.
func (p *presence) isOnline(ctx context.Context, userID string) bool {
	p.mu.Lock()
	here := p.local[userID] > 0
	p.mu.Unlock()
	return here || (p.relay != nil && p.onlineElsewhere(ctx, userID))
}

func (p *presence) announce(ctx context.Context, ev *parleyv1.PresenceEvent) {
	peers, err := p.db.PresencePeers(ctx, ev.GetUserId())
	if err != nil {
		p.logger.Warn("list presence peers", "user_id", ev.GetUserId(), "error", err)
		return
	}
	p.hub.publish(peers, "", &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Presence{Presence: ev}})
}

// onlinePeers returns presence events for userID's peers who are online now,
// for a stream that is starting.
func (p *presence) onlinePeers(ctx context.Context, userID string) ([]*parleyv1.SubscribeResponse, error) {
	peers, err := p.db.PresencePeers(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list presence peers: %w", err)
	}
	var out []*parleyv1.SubscribeResponse
	for _, peer := range peers {
		if p.isOnline(ctx, peer) {
			out = append(out, &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Presence{Presence: &parleyv1.PresenceEvent{UserId: peer, Online: true}}})
		}
	}
	return out, nil
}
