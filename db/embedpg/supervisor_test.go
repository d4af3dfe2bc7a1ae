package embedpg

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond) // polling for the condition, with a deadline
	}
}

func TestSupervisorRestartsKilledServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logs := &recorder{}
	restarted := make(chan struct{}, 10)
	sup, err := Supervise(ctx, Options{DataDir: filepath.Join(reachableTempDir(t), "pg"), Logger: slog.New(logs)},
		SuperviseOptions{OnRestart: func() { restarted <- struct{}{} }})
	if err != nil {
		t.Fatalf("Supervise: %v", err)
	}
	defer sup.Stop(context.Background())

	conn := connect(ctx, t, sup.URL("postgres"))
	if _, err := conn.Exec(ctx, "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	for round := 1; round <= 2; round++ {
		pid := sup.PID()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
		killed := time.Now()
		select {
		case <-restarted:
		case <-time.After(time.Minute):
			t.Fatalf("round %d: not restarted within a minute; logged %q", round, logs.messages())
		}
		t.Logf("round %d: restarted %v after the kill", round, time.Since(killed).Round(time.Millisecond))
		if got := sup.PID(); got == pid || got == 0 {
			t.Errorf("round %d: PID after restart = %d, want a new one (was %d)", round, got, pid)
		}
		if got := sup.Restarts(); got != round {
			t.Errorf("Restarts = %d, want %d", got, round)
		}
		// The same URL reaches the new server, with the data.
		conn := connect(ctx, t, sup.URL("postgres"))
		var body string
		if err := conn.QueryRow(ctx, "SELECT body FROM notes").Scan(&body); err != nil || body != "kept" {
			t.Errorf("round %d: row after restart: %q, %v", round, body, err)
		}
		conn.Close(ctx)
	}
	if err := sup.Err(); err != nil {
		t.Errorf("Err after successful restarts = %v, want nil", err)
	}
	for _, want := range []string{"exited unexpectedly", "embedded PostgreSQL restarted"} {
		if !logs.has(want) {
			t.Errorf("log lacks %q; logged %q", want, logs.messages())
		}
	}

	sockDir := sup.sockDir
	if err := sup.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := sup.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := os.Stat(sockDir); !os.IsNotExist(err) {
		t.Errorf("socket dir after Stop: %v, want it gone", err)
	}
	select {
	case <-restarted:
		t.Error("a stopped server was restarted")
	default:
	}
}

// fakeServer is a Server whose "postmaster" is a sleep process, for tests of
// the supervisor's logic without PostgreSQL.
func fakeServer(t *testing.T) *Server {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, drained := make(chan struct{}), make(chan struct{})
	close(drained)
	s := &Server{sockDir: t.TempDir(), logger: slog.New(slog.DiscardHandler), cmd: cmd,
		out: newLineLog(slog.New(slog.DiscardHandler)), exited: exited, drained: drained}
	go func() {
		s.waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	return s
}

// startLog is a fake start function's record of its calls.
type startLog struct {
	mu    sync.Mutex
	calls []time.Time
}

func (l *startLog) add() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, time.Now())
	return len(l.calls)
}

func (l *startLog) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.calls...)
}

func TestSupervisorGivesUpAfterBudget(t *testing.T) {
	t.Parallel()
	first := fakeServer(t)
	var starts startLog
	boom := errors.New("boom: data dir gone")
	sopts := SuperviseOptions{
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, GiveUpAfter: 300 * time.Millisecond,
		start: func(context.Context, Options) (*Server, error) {
			if starts.add() == 1 {
				return first, nil
			}
			return nil, boom
		},
	}
	sup, err := Supervise(t.Context(), Options{}, sopts)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Stop(context.Background())
	if err := sup.Err(); err != nil {
		t.Fatalf("Err while up = %v, want nil", err)
	}
	killed := time.Now()
	_ = first.cmd.Process.Kill()
	waitFor(t, 10*time.Second, "supervisor gives up", func() bool { return sup.Err() != nil })
	took := time.Since(killed)

	err = sup.Err()
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "gave up") {
		t.Errorf("Err = %v, want it to say it gave up, wrapping the last start error", err)
	}
	if took < sopts.GiveUpAfter {
		t.Errorf("gave up %v after the kill, before the %v budget", took, sopts.GiveUpAfter)
	}
	if sup.PID() != 0 || sup.Restarts() != 0 {
		t.Errorf("PID %d, Restarts %d after giving up; want 0, 0", sup.PID(), sup.Restarts())
	}
	// Backoff doubles from MinBackoff and stops at MaxBackoff.
	calls := starts.times()[1:]
	if len(calls) < 5 {
		t.Fatalf("%d restart attempts in %v, want at least 5", len(calls), took)
	}
	want := sopts.MinBackoff
	for i := 1; i < len(calls); i++ {
		want = min(want*2, sopts.MaxBackoff)
		if gap := calls[i].Sub(calls[i-1]); gap < want {
			t.Errorf("attempt %d came %v after the one before, want at least %v", i+1, gap, want)
		}
	}
	// Having given up, it tries no more.
	n := len(starts.times())
	time.Sleep(100 * time.Millisecond) // proving an absence: nothing to wait for
	if got := len(starts.times()); got != n {
		t.Errorf("%d more start attempts after giving up", got-n)
	}
}

// A server that comes back but dies again before it is stable continues the
// same outage: a crash loop ends in giving up, not in restarts forever.
func TestSupervisorCrashLoopIsOneOutage(t *testing.T) {
	t.Parallel()
	var starts startLog
	sopts := SuperviseOptions{
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		GiveUpAfter: 300 * time.Millisecond, StableAfter: time.Hour,
		start: func(context.Context, Options) (*Server, error) {
			s := fakeServer(t)
			if starts.add() > 1 {
				_ = s.cmd.Process.Kill() // up, and dead again at once
			} else {
				go func() {
					time.Sleep(20 * time.Millisecond) // let Supervise return first
					_ = s.cmd.Process.Kill()
				}()
			}
			return s, nil
		},
	}
	sup, err := Supervise(t.Context(), Options{}, sopts)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Stop(context.Background())
	waitFor(t, 10*time.Second, "supervisor gives up on a crash loop", func() bool { return sup.Err() != nil })
	if got := sup.Restarts(); got < 2 {
		t.Errorf("Restarts = %d before giving up, want several", got)
	}
	if err := sup.Err(); !strings.Contains(err.Error(), "died") {
		t.Errorf("Err = %v, want it to say the server kept dying", err)
	}
	// Each death of the loop backs off further, up to MaxBackoff.
	calls := starts.times()[1:]
	want := sopts.MinBackoff
	for i := 1; i < len(calls); i++ {
		want = min(want*2, sopts.MaxBackoff)
		if gap := calls[i].Sub(calls[i-1]); gap < want {
			t.Errorf("restart %d came %v after the one before, want at least %v", i+1, gap, want)
		}
	}
}

func TestSupervisorStopDuringBackoff(t *testing.T) {
	t.Parallel()
	first := fakeServer(t)
	var starts startLog
	sup, err := Supervise(t.Context(), Options{}, SuperviseOptions{
		MinBackoff: time.Hour,
		start: func(context.Context, Options) (*Server, error) {
			starts.add()
			return first, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = first.cmd.Process.Kill()
	<-first.Exited()
	stopped := make(chan error, 1)
	go func() { stopped <- sup.Stop(context.Background()) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waited out the backoff")
	}
	if n := len(starts.times()); n != 1 {
		t.Errorf("%d starts, want 1", n)
	}
}
