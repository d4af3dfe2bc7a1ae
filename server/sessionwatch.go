package server

import (
	"context"
	"log/slog"
	"time"
)

// sessionWatch ends the streams of sessions that ended without this node
// hearing of it: a revocation whose relay message was lost, or a session that
// expired. One goroutine checks every session with a stream open here, so an
// idle stream costs no timer of its own and the check costs one cache lookup
// per session, not per stream.
type sessionWatch struct {
	hub      *hub
	sessions *sessionCache
	logger   *slog.Logger
	cancel   context.CancelFunc
	done     chan struct{}
}

func newSessionWatch(h *hub, sessions *sessionCache, every time.Duration, logger *slog.Logger) *sessionWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &sessionWatch{hub: h, sessions: sessions, logger: logger, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, every)
	return w
}

func (w *sessionWatch) run(ctx context.Context, every time.Duration) {
	defer close(w.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.check(ctx)
		}
	}
}

// check ends the local streams of every session no longer active. A session
// that cannot be checked (the database is unreachable) keeps its streams:
// a database blip must not disconnect every client at once.
func (w *sessionWatch) check(ctx context.Context) {
	for sessionID, userID := range w.hub.sessions() {
		ok, err := w.sessions.active(ctx, sessionID)
		if err != nil {
			if ctx.Err() == nil {
				w.logger.Warn("check stream session", "error", err)
			}
			return
		}
		if !ok {
			w.hub.endLocal(userID, sessionID)
		}
	}
}

// Close stops the watch and waits for it.
func (w *sessionWatch) Close() {
	w.cancel()
	<-w.done
}
