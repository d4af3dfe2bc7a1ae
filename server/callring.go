package server

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// ringer ends calls that ring too long. It holds one timer per ringing call
// on this node; the database stays the record, so a timer lost with a
// restart only delays the end: on start the ringer picks up every call still
// ringing (see callsService.resumeRinging), and every call RPC first expires
// the calls that rang past their time.
type ringer struct {
	expire func(ctx context.Context, callID string)
	logger *slog.Logger

	ctx    context.Context // cancelled by Close, for expiries under way
	cancel context.CancelFunc

	mu     sync.Mutex
	timers map[string]*time.Timer
	closed bool
	wg     sync.WaitGroup // expiries and background work under way
}

func newRinger(expire func(ctx context.Context, callID string), logger *slog.Logger) *ringer {
	ctx, cancel := context.WithCancel(context.Background())
	return &ringer{expire: expire, logger: logger, ctx: ctx, cancel: cancel, timers: make(map[string]*time.Timer)}
}

// start has callID expire after d, unless stop comes first.
func (r *ringer) start(callID string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if t, ok := r.timers[callID]; ok {
		t.Stop()
	}
	r.timers[callID] = time.AfterFunc(max(d, 0), func() {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		delete(r.timers, callID)
		r.wg.Add(1)
		r.mu.Unlock()
		defer r.wg.Done()
		r.expire(r.ctx, callID)
	})
}

// stop forgets callID's timer: the call was answered or ended.
func (r *ringer) stop(callID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.timers[callID]; ok {
		t.Stop()
		delete(r.timers, callID)
	}
}

// run runs fn in the background until it returns; Close cancels its
// context and waits for it.
func (r *ringer) run(fn func(ctx context.Context)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn(r.ctx)
	}()
}

// Close stops every timer and waits for the expiries under way.
func (r *ringer) Close() {
	r.mu.Lock()
	r.closed = true
	for id, t := range r.timers {
		t.Stop()
		delete(r.timers, id)
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}
