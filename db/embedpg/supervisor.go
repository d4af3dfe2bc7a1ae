package embedpg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// SuperviseOptions tune how a Supervisor brings its server back. Zero values
// take the defaults.
type SuperviseOptions struct {
	// MinBackoff is the wait before the first restart after the server dies;
	// it doubles after each failed attempt up to MaxBackoff. Default 100 ms
	// and 5 s. The first attempt usually fails: backends the dead postmaster
	// left behind hold its shared memory until they notice, a few ms later.
	MinBackoff, MaxBackoff time.Duration
	// GiveUpAfter bounds one outage: once the server has been down (or
	// crash-looping) this long, the supervisor stops trying and Err reports
	// it. Default 1 min.
	GiveUpAfter time.Duration
	// StableAfter is how long a restarted server must stay up for its outage
	// to be over. One that dies sooner continues the same outage, so a crash
	// loop counts against one GiveUpAfter. Default 30 s.
	StableAfter time.Duration
	// OnRestart, if set, is called after each successful restart, from the
	// supervisor's goroutine.
	OnRestart func()

	// start starts a server; tests replace it. Default Start.
	start func(context.Context, Options) (*Server, error)
}

func (o *SuperviseOptions) defaults() {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = time.Minute
	}
	if o.StableAfter <= 0 {
		o.StableAfter = 30 * time.Second
	}
	if o.start == nil {
		o.start = Start
	}
}

// Supervisor runs a private PostgreSQL server and restarts it whenever it
// exits without being stopped (a crash, an OOM kill, an operator's kill -9),
// with exponential backoff, at the same URL: pools reconnect by themselves.
// Stop it when done.
type Supervisor struct {
	opts    Options
	sopts   SuperviseOptions
	logger  *slog.Logger
	sockDir string

	ctx    context.Context // ends on Stop, cutting a restart short
	cancel context.CancelFunc
	done   chan struct{} // closed when the watching goroutine returns

	mu       sync.Mutex
	srv      *Server // the current server; nil while down
	err      error   // why it gave up
	restarts int
	stopped  bool
}

// Supervise starts a server as Start does and watches it. opts.SocketDir is
// ignored: the supervisor keeps the socket in a directory of its own, so that
// restarted servers have the same URL.
func Supervise(ctx context.Context, opts Options, sopts SuperviseOptions) (*Supervisor, error) {
	sopts.defaults()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sockDir, err := NewSocketDir()
	if err != nil {
		return nil, err
	}
	opts.SocketDir = sockDir
	srv, err := sopts.start(ctx, opts)
	if err != nil {
		_ = os.RemoveAll(sockDir)
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Supervisor{
		opts: opts, sopts: sopts, logger: logger, sockDir: sockDir,
		ctx: sctx, cancel: cancel, done: make(chan struct{}), srv: srv,
	}
	go s.watch(srv)
	return s, nil
}

// URL is as Server.URL; it stays the same across restarts.
func (s *Supervisor) URL(database string) string {
	return (&Server{sockDir: s.sockDir}).URL(database)
}

// Err is nil while the supervisor keeps (or tries to keep) the server up,
// and says why once it has given up bringing it back.
func (s *Supervisor) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Restarts is how many times the server has been brought back.
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

// PID is the current postmaster's process id, or 0 while it is down.
func (s *Supervisor) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return 0
	}
	return s.srv.PID()
}

// watch waits for srv to exit and brings it back, until Stop or until an
// outage outlasts GiveUpAfter.
func (s *Supervisor) watch(srv *Server) {
	defer close(s.done)
	var (
		outageBegan time.Time // zero: no outage in progress
		deaths      int       // in this outage
		backoff     = s.sopts.MinBackoff
		upSince     = time.Now()
	)
	for {
		select {
		case <-srv.Exited():
		case <-s.ctx.Done():
			return
		}
		died := time.Now()
		s.mu.Lock()
		s.srv = nil
		s.mu.Unlock()
		_ = srv.Stop(s.ctx) // nothing to signal; it only cleans up
		if outageBegan.IsZero() || died.Sub(upSince) >= s.sopts.StableAfter {
			outageBegan, deaths, backoff = died, 0, s.sopts.MinBackoff
		} else {
			// Crash-looping: back off further, as after a failed start.
			backoff = min(backoff*2, s.sopts.MaxBackoff)
		}
		deaths++
		s.logger.Error("embedded PostgreSQL exited unexpectedly; restarting it",
			"pid", srv.PID(), "exit", fmt.Sprint(srv.ExitErr()), "up_for", died.Sub(upSince).Round(time.Millisecond),
			"outage_so_far", died.Sub(outageBegan).Round(time.Millisecond), "last_output", srv.out.tail())
		if down := died.Sub(outageBegan); down >= s.sopts.GiveUpAfter {
			s.giveUp(fmt.Errorf("embedpg: PostgreSQL died %d times in %s, each time within %s of starting; gave up",
				deaths, down.Round(time.Millisecond), s.sopts.StableAfter))
			return
		}

		for attempt := 1; ; attempt++ {
			if err := s.sleep(backoff); err != nil {
				return
			}
			next, err := s.sopts.start(s.ctx, s.opts)
			if err == nil {
				srv, upSince = next, time.Now()
				s.mu.Lock()
				s.srv = srv
				s.restarts++
				s.mu.Unlock()
				s.logger.Info("embedded PostgreSQL restarted", "pid", srv.PID(), "attempts", attempt,
					"down_for", time.Since(died).Round(time.Millisecond))
				if s.sopts.OnRestart != nil {
					s.sopts.OnRestart()
				}
				break
			}
			if s.ctx.Err() != nil {
				return
			}
			down := time.Since(outageBegan)
			if down >= s.sopts.GiveUpAfter {
				s.giveUp(fmt.Errorf("embedpg: PostgreSQL has been down for %s and %d restarts failed; gave up: %w",
					down.Round(time.Millisecond), attempt, err))
				return
			}
			backoff = min(backoff*2, s.sopts.MaxBackoff)
			s.logger.Warn("restarting embedded PostgreSQL failed; trying again", "attempt", attempt,
				"retry_in", backoff, "down_for", down.Round(time.Millisecond), "error", err)
		}
	}
}

func (s *Supervisor) giveUp(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	s.logger.Error("embedded PostgreSQL cannot be brought back; giving up", "error", err)
}

// sleep waits d, or returns an error when the supervisor is stopped first.
func (s *Supervisor) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// Stop stops restarting, shuts the current server down (as Server.Stop) and
// removes the socket directory. Calling it again does nothing.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	// A restart under way ends with ctx; Start then stops what it began.
	s.cancel()
	<-s.done
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	var err error
	if srv != nil {
		err = srv.Stop(ctx)
	}
	if rmErr := os.RemoveAll(s.sockDir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("embedpg: remove socket dir: %w", rmErr))
	}
	return err
}
