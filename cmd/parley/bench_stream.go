package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// delivery is one message a stream received.
type delivery struct {
	seq         int64
	clientMsgID string
	at          time.Time
}

// subscriber reads one Subscribe stream in its own goroutine and records the
// messages of one conversation.
type subscriber struct {
	convID     string
	cancel     context.CancelFunc
	live       chan struct{} // closed at the first heartbeat
	done       chan struct{} // closed when the stream has ended
	liveOnce   sync.Once
	lastSeq    atomic.Int64
	heartbeats atomic.Int64
	got        []delivery // read only after done
	err        error      // read only after done
}

// subscribe opens a stream for u from the given cursors, recording messages
// of convID (none when convID is empty).
func (c *benchClient) subscribe(ctx context.Context, u benchUser, cursors []*parleyv1.Cursor, convID string) *subscriber {
	ctx, cancel := context.WithCancel(ctx)
	s := &subscriber{convID: convID, cancel: cancel, live: make(chan struct{}), done: make(chan struct{})}
	go s.read(ctx, c, u, cursors)
	return s
}

func (s *subscriber) read(ctx context.Context, c *benchClient, u benchUser, cursors []*parleyv1.Cursor) {
	defer close(s.done)
	stream, err := u.msgs.Subscribe(u.authed(ctx), &parleyv1.SubscribeRequest{Cursors: cursors, BatchCatchUp: true})
	if err != nil {
		s.err = fmt.Errorf("subscribe %s: %w", u.name, err)
		return
	}
	defer stream.Close()
	for stream.Receive() {
		ev := stream.Msg()
		if ev.GetHeartbeat() != nil {
			s.heartbeats.Add(1)
			s.liveOnce.Do(func() { close(s.live) })
		}
		if m := ev.GetMessage(); m != nil {
			s.record(m, time.Now())
		}
		if b := ev.GetMessageBatch(); b != nil {
			now := time.Now()
			for _, m := range b.GetMessages() {
				s.record(m, now)
			}
		}
	}
	if err := stream.Err(); err != nil && ctx.Err() == nil {
		s.err = fmt.Errorf("stream of %s: %w", u.name, err)
	}
}

// record notes a message if it belongs to the conversation s watches.
func (s *subscriber) record(m *parleyv1.Message, at time.Time) {
	if s.convID == "" || m.GetConversationId() != s.convID {
		return
	}
	s.got = append(s.got, delivery{seq: m.GetSeq(), clientMsgID: m.GetClientMsgId(), at: at})
	if m.GetSeq() > s.lastSeq.Load() {
		s.lastSeq.Store(m.GetSeq())
	}
}

// waitLive waits for the stream's first heartbeat, which follows its backlog.
func (s *subscriber) waitLive(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.live:
		return nil
	case <-s.done:
		if s.err != nil {
			return s.err
		}
		return fmt.Errorf("stream ended before it was live")
	case <-t.C:
		return fmt.Errorf("stream not live after %v", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop ends the stream and waits for its goroutine; it returns the stream's
// error, if it failed on its own.
func (s *subscriber) stop() error {
	s.cancel()
	<-s.done
	return s.err
}

// waitUntil polls cond until it holds or timeout passes; it reports whether
// cond held.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}
