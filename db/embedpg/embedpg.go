// Package embedpg runs a private PostgreSQL server from the machine's own
// installation, for `parley serve` when no database URL is configured and for
// tests when no server answers.
//
// The server listens on a unix socket only, in a short private directory, so it
// never competes for a TCP port. PostgreSQL refuses to run as root, so when the
// process is root the server runs as the `postgres` system user instead.
//
// Supervise runs one and restarts it, at the same URL, whenever it dies.
package embedpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// superuser is the role initdb creates; URL connects as it.
	superuser = "postgres"
	// port only names the socket file (.s.PGSQL.5432): nothing listens on TCP,
	// and the socket directory is private, so it never collides.
	port = "5432"

	startTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	// killTimeout bounds the wait after SIGKILL, which only a process stuck in
	// the kernel survives.
	killTimeout = 10 * time.Second
	// outputDrain bounds how long an error message waits for the rest of the
	// output after the server exits: orphaned backends may hold the pipe open
	// for a moment.
	outputDrain = 5 * time.Second
	tailLines   = 20
)

// Options configure a private server.
type Options struct {
	// DataDir is the cluster directory; created and initialized on first use,
	// reused after.
	DataDir string
	// BinDir holds initdb and postgres. Default: the installation matching an
	// existing cluster's PG_VERSION, else the newest /usr/lib/postgresql/*/bin,
	// else the directory of initdb on $PATH.
	BinDir string
	// Logger receives postgres's own log lines at Debug level; nil discards.
	Logger *slog.Logger
	// FallbackDir, when running as root, is where a new cluster goes if the
	// unprivileged user cannot reach DataDir (say, under a 0700 /root): a
	// fresh directory under it, owned by that user, to which DataDir becomes
	// a symbolic link. The modes of the user's own directories stay as they
	// are. Empty: such a data dir is an error.
	FallbackDir string
	// SocketDir, when set, is where the server's socket goes (made by
	// NewSocketDir), so that a server started again there has the same URL;
	// Stop leaves it for its maker to remove. Empty: a new private directory,
	// removed by Stop.
	SocketDir string
}

// Server is a running private PostgreSQL server. Stop it when done.
type Server struct {
	sockDir  string
	ownsSock bool // Stop removes sockDir
	logger   *slog.Logger
	cmd      *exec.Cmd
	out      *lineLog
	exited   <-chan struct{} // closed as soon as the postmaster has exited
	waitErr  error           // set before exited is closed
	drained  <-chan struct{} // closed when its output has been read to the end

	mu      sync.Mutex
	stopped bool
}

// Start starts a server on opts.DataDir, running initdb first if the directory
// holds no cluster yet, and returns once the server accepts connections.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.DataDir == "" {
		return nil, errors.New("embedpg: no data dir")
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("embedpg: data dir: %w", err)
	}
	// A data dir that links elsewhere (FallbackDir's doing) is run where it
	// leads, which the server's user can reach.
	if real, err := filepath.EvalSymlinks(dataDir); err == nil {
		dataDir = real
	}
	clusterVersion := readVersion(dataDir)
	binDir, err := findBinDir(opts.BinDir, clusterVersion)
	if err != nil {
		return nil, err
	}
	owner, err := runAs()
	if err != nil {
		return nil, err
	}
	if owner != nil && clusterVersion == "" && opts.FallbackDir != "" {
		if dataDir, err = relocate(dataDir, opts.FallbackDir, owner, logger); err != nil {
			return nil, err
		}
	}
	if err := prepareDataDir(dataDir, owner, clusterVersion != "", logger); err != nil {
		return nil, err
	}
	if owner != nil {
		if err := checkReachable(ctx, binDir, dataDir, owner); err != nil {
			return nil, err
		}
	}
	if clusterVersion == "" {
		logger.Info("initializing PostgreSQL cluster", "data_dir", dataDir, "bin_dir", binDir)
		if err := initdb(ctx, binDir, dataDir, owner, logger); err != nil {
			return nil, err
		}
	}

	sockDir, ownsSock := opts.SocketDir, false
	if sockDir == "" {
		if sockDir, err = makeSocketDir(owner); err != nil {
			return nil, err
		}
		ownsSock = true
	}
	s, err := start(binDir, dataDir, sockDir, owner, logger)
	if err != nil {
		if ownsSock {
			_ = os.RemoveAll(sockDir)
		}
		return nil, err
	}
	s.ownsSock = ownsSock
	began := time.Now()
	if err := s.waitReady(ctx, dataDir); err != nil {
		// The start error is what matters; Stop only cleans up.
		_ = s.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	logger.Debug("PostgreSQL ready", "data_dir", dataDir, "socket_dir", sockDir, "took", time.Since(began))
	return s, nil
}

// URL returns a postgres:// URL, usable by pgx and libpq, that reaches database
// over the server's unix socket as the superuser.
func (s *Server) URL(database string) string {
	q := url.Values{}
	q.Set("host", s.sockDir)
	// An explicit port keeps a PGPORT in the environment from choosing another
	// socket file.
	q.Set("port", port)
	q.Set("sslmode", "disable")
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// Stop shuts the server down fast (SIGINT: open sessions are ended, committed
// data is safe), escalating to SIGKILL if it has not exited within 30 s or when
// ctx ends, and removes the socket directory (unless it was given as
// Options.SocketDir). Calling it again does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	defer func() {
		if !s.ownsSock {
			return
		}
		if err := os.RemoveAll(s.sockDir); err != nil {
			s.logger.Warn("remove PostgreSQL socket dir", "dir", s.sockDir, "error", err)
		}
	}()

	select {
	case <-s.exited:
		// It stopped on its own (crashed or was killed): nothing to shut down,
		// but the caller should hear about it.
		if s.waitErr != nil && !errors.Is(s.waitErr, exec.ErrWaitDelay) {
			return fmt.Errorf("embedpg: postgres had already exited: %w", s.waitErr)
		}
		return nil
	default:
	}

	if err := s.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("embedpg: signal postgres: %w", err)
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	var reason string
	select {
	case <-s.exited:
		return nil
	case <-timer.C:
		reason = fmt.Sprintf("did not stop within %s", stopTimeout)
	case <-ctx.Done():
		reason = fmt.Sprintf("stop cancelled (%v)", context.Cause(ctx))
	}
	s.logger.Warn("killing PostgreSQL", "pid", s.cmd.Process.Pid, "reason", reason)
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("embedpg: kill postgres: %w", err)
	}
	select {
	case <-s.exited:
		return fmt.Errorf("embedpg: postgres %s; killed it", reason)
	case <-time.After(killTimeout):
		return fmt.Errorf("embedpg: postgres %s and has not exited %s after SIGKILL", reason, killTimeout)
	}
}

// start launches the postmaster. We exec postgres directly rather than through
// pg_ctl so that the process is our child: we see it exit, and the kernel
// interrupts it if we die.
func start(binDir, dataDir, sockDir string, owner *credential, logger *slog.Logger) (*Server, error) {
	args := []string{
		"-D", dataDir,
		"-c", "listen_addresses=",
		"-c", "port=" + port,
		"-c", "unix_socket_directories=" + sockDir,
		"-c", "unix_socket_permissions=0700",
		// Explicit, so that an edited postgresql.conf cannot weaken durability:
		// Parley acknowledges messages only once they are on disk.
		"-c", "fsync=on",
		"-c", "synchronous_commit=on",
		"-c", "full_page_writes=on",
		// Modest sizes for a small single-node server.
		"-c", "max_connections=200",
		"-c", "shared_buffers=128MB",
		// Log to stderr, which we forward, never to files in the data dir.
		"-c", "logging_collector=off",
		"-c", "log_destination=stderr",
	}
	if v, err := strconv.Atoi(readVersion(dataDir)); err == nil && v >= 14 {
		// Crash recovery first syncs the whole data dir; file by file that
		// took 1.6 s of a 2.4 s restart after a SIGKILL on a fresh cluster,
		// one syncfs per file system a fraction of it. Linux reports
		// syncfs's write-back errors since 5.8.
		args = append(args, "-c", "recovery_init_sync_method=syncfs")
	}
	out := newLineLog(logger)
	cmd := command(filepath.Join(binDir, "postgres"), args, dataDir, owner, out)
	// The output goes through a pipe of our own rather than one os/exec
	// copies from: Wait then returns the moment the postmaster exits, even
	// while backends it left behind (after a SIGKILL) still hold the pipe,
	// so a supervisor hears of a crash at once.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("embedpg: output pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	exited, drained := make(chan struct{}), make(chan struct{})
	s := &Server{sockDir: sockDir, logger: logger, cmd: cmd, out: out, exited: exited, drained: drained}
	errc, err := startPinned(cmd)
	_ = w.Close() // the child has its own copy
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("embedpg: start postgres: %w", err)
	}
	go func() {
		_, _ = io.Copy(out, r) // lineLog never fails; a read error ends the output
		_ = r.Close()
		out.flush()
		close(drained)
	}()
	go func() {
		s.waitErr = <-errc
		close(exited)
	}()
	return s, nil
}

// Exited is closed as soon as the postmaster has exited, whatever the cause.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// ExitErr is how the postmaster exited (nil for a clean exit); meaningful
// once Exited is closed.
func (s *Server) ExitErr() error {
	<-s.exited
	return s.waitErr
}

// PID is the postmaster's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// tail returns the last lines of the server's output, waiting a moment for
// the output to end if the server has exited.
func (s *Server) tail() []string {
	select {
	case <-s.exited:
		select {
		case <-s.drained:
		case <-time.After(outputDrain):
		}
	default:
	}
	return s.out.tail()
}

// waitReady polls until the server accepts a connection, it exits, ctx ends,
// or startTimeout passes.
func (s *Server) waitReady(ctx context.Context, dataDir string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	adminURL := s.URL("postgres")
	var lastErr error
	for {
		select {
		case <-s.exited:
			return startupFailed(dataDir, s.waitErr, s.tail())
		case <-ctx.Done():
			return fmt.Errorf("embedpg: PostgreSQL on %s not accepting connections (last error: %v): %w\n%s",
				dataDir, lastErr, context.Cause(ctx), indent(s.tail()))
		case <-tick.C:
		}
		connCtx, connCancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(connCtx, adminURL)
		if err == nil {
			err = conn.Ping(connCtx)
			_ = conn.Close(connCtx)
		}
		connCancel()
		if err == nil {
			return nil
		}
		lastErr = err
	}
}

func startupFailed(dataDir string, waitErr error, tail []string) error {
	joined := strings.Join(tail, "\n")
	var hint string
	switch {
	case strings.Contains(joined, `lock file "postmaster.pid" already exists`):
		hint = fmt.Sprintf("another PostgreSQL server is already running on data dir %s; stop it (or, if none runs, remove its stale postmaster.pid)", dataDir)
	case strings.Contains(joined, "database files are incompatible with server"):
		hint = fmt.Sprintf("data dir %s was created by another PostgreSQL major version; set BinDir to that version's bin directory", dataDir)
	default:
		hint = fmt.Sprintf("PostgreSQL on %s exited during startup", dataDir)
	}
	return fmt.Errorf("embedpg: %s (%v); its last output:\n%s", hint, waitErr, indent(tail))
}

// initdb creates the cluster. Interrupting initdb (SIGINT, on ctx's end or our
// death) makes it remove what it wrote, so a half-made cluster with a
// PG_VERSION file is never left behind to be mistaken for a finished one.
func initdb(ctx context.Context, binDir, dataDir string, owner *credential, logger *slog.Logger) error {
	args := []string{
		"-D", dataDir,
		"-A", "trust",
		"-E", "UTF8",
		"--locale=C",
		"-U", superuser,
	}
	out := newLineLog(logger)
	cmd := command(filepath.Join(binDir, "initdb"), args, dataDir, owner, out)
	errc, err := startPinned(cmd)
	if err != nil {
		return fmt.Errorf("embedpg: start initdb: %w", err)
	}
	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-errc:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-errc
		}
		return fmt.Errorf("embedpg: initdb interrupted: %w", context.Cause(ctx))
	}
	out.flush()
	if runErr != nil {
		return fmt.Errorf("embedpg: initdb %s: %w; its last output:\n%s", dataDir, runErr, indent(out.tail()))
	}
	return nil
}

// command builds an exec.Cmd for a PostgreSQL program.
func command(path string, args []string, dir string, owner *credential, out *lineLog) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = childEnv()
	cmd.Stdout = out // one writer for both: os/exec then uses one pipe, so lines keep their order
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// If Parley dies without stopping the server, the kernel asks it to
		// shut down fast instead of leaving it holding the data dir.
		Pdeathsig: syscall.SIGINT,
	}
	if owner != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: owner.uid, Gid: owner.gid, Groups: owner.groups}
	}
	return cmd
}

// startPinned starts cmd from a goroutine locked to its OS thread and returns
// the result of Wait on a channel. Pdeathsig fires when the *thread* that
// forked the child exits (golang/go#27505), and Go ends threads whose locked
// goroutine returns; pinning a thread for the child's lifetime makes the
// signal mean "Parley died" and nothing else.
func startPinned(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked on purpose: when this goroutine returns, the child has
		// exited and the thread may go with it.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// childEnv is the environment for PostgreSQL programs. Parley's environment
// may hold secrets, and the server runs SQL as another user; it needs none of
// it beyond these.
func childEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "TZ", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// credential is the identity the PostgreSQL programs run as, when it differs
// from ours.
type credential struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
}

// runAs returns the postgres system user when we are root (PostgreSQL refuses
// to run as root), and nil, meaning "as ourselves", otherwise.
func runAs() (*credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("embedpg: running as root, which PostgreSQL refuses, and there is no postgres system user to run it as (install the postgresql package or create the user): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("embedpg: postgres user's uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("embedpg: postgres user's gid %q: %w", u.Gid, err)
	}
	c := &credential{name: u.Username, uid: uint32(uid), gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("embedpg: postgres user's groups: %w", err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("embedpg: postgres user's group %q: %w", id, err)
		}
		c.groups = append(c.groups, uint32(g))
	}
	return c, nil
}

// prepareDataDir creates the data dir (parents 0755, so another user can pass
// through them; the dir itself 0700, as PostgreSQL demands) and gives it to
// owner.
func prepareDataDir(dataDir string, owner *credential, hasCluster bool, logger *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return fmt.Errorf("embedpg: create parent of data dir: %w", err)
	}
	if err := os.Mkdir(dataDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("embedpg: create data dir: %w", err)
	}
	info, err := os.Stat(dataDir)
	if err != nil {
		return fmt.Errorf("embedpg: data dir: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("embedpg: data dir %s is not a directory", dataDir)
	}
	// PostgreSQL accepts 0700, or 0750 for group read access; anything else
	// makes it refuse to start.
	if perm := info.Mode().Perm(); perm != 0o700 && perm != 0o750 {
		if err := os.Chmod(dataDir, 0o700); err != nil {
			return fmt.Errorf("embedpg: chmod data dir: %w", err)
		}
	}
	if owner == nil {
		return nil
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == owner.uid {
		return nil
	}
	if !hasCluster {
		if err := os.Chown(dataDir, int(owner.uid), int(owner.gid)); err != nil {
			return fmt.Errorf("embedpg: give data dir to user %s: %w", owner.name, err)
		}
		return nil
	}
	// A cluster made by another user (say, by an earlier run that was not
	// root): the server only starts on files it owns.
	logger.Info("giving PostgreSQL data dir to its user", "data_dir", dataDir, "user", owner.name)
	err = filepath.WalkDir(dataDir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(owner.uid), int(owner.gid))
	})
	if err != nil {
		return fmt.Errorf("embedpg: give data dir to user %s: %w", owner.name, err)
	}
	return nil
}

// checkReachable makes sure owner can enter dataDir, by running postgres -V
// there as owner: the child changes directory after dropping privileges, so
// this asks the kernel rather than guessing from mode bits. On failure it names
// the directory in the way.
func checkReachable(ctx context.Context, binDir, dataDir string, owner *credential) error {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "postgres"), "-V")
	cmd.Dir = dataDir
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: owner.uid, Gid: owner.gid, Groups: owner.groups},
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if blocker := firstBlocked(dataDir, owner); blocker != "" {
		return fmt.Errorf("embedpg: PostgreSQL runs as user %s (we are root), which cannot reach data dir %s because it may not enter %s; make that directory searchable (chmod o+x) or choose another data dir",
			owner.name, dataDir, blocker)
	}
	return fmt.Errorf("embedpg: run %s/postgres as user %s in %s: %w %s", binDir, owner.name, dataDir, err, strings.TrimSpace(string(out)))
}

// relocate returns where a new cluster for dataDir goes: dataDir itself when
// owner can reach it, else a fresh directory under fallback, owned by owner,
// which dataDir becomes a link to. Granting owner passage through the user's
// directories instead (chmod o+x /root) would change what the user did not
// ask to change.
func relocate(dataDir, fallback string, owner *credential, logger *slog.Logger) (string, error) {
	existing := dataDir
	for existing != filepath.Dir(existing) {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		existing = filepath.Dir(existing)
	}
	blocked := firstBlocked(existing, owner)
	if blocked == "" {
		return dataDir, nil
	}
	if existing == dataDir {
		// An empty data dir (left by an attempt that failed) gives way to
		// the link; anything else in its place is the user's.
		if err := os.Remove(dataDir); err != nil {
			return "", fmt.Errorf("embedpg: user %s cannot reach data dir %s (it may not enter %s), and it is not empty, so it cannot become a link to a place it can: %w",
				owner.name, dataDir, blocked, err)
		}
	}
	if err := os.MkdirAll(fallback, 0o755); err != nil {
		return "", fmt.Errorf("embedpg: create %s: %w", fallback, err)
	}
	target, err := os.MkdirTemp(fallback, "postgres-")
	if err != nil {
		return "", fmt.Errorf("embedpg: create cluster dir under %s: %w", fallback, err)
	}
	if err := os.Chown(target, int(owner.uid), int(owner.gid)); err != nil {
		return "", fmt.Errorf("embedpg: give %s to user %s: %w", target, owner.name, err)
	}
	if b := firstBlocked(target, owner); b != "" {
		return "", fmt.Errorf("embedpg: user %s cannot reach data dir %s (it may not enter %s), nor %s (it may not enter %s)",
			owner.name, dataDir, blocked, target, b)
	}
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return "", fmt.Errorf("embedpg: create parent of data dir: %w", err)
	}
	if err := os.Symlink(target, dataDir); err != nil {
		return "", fmt.Errorf("embedpg: link data dir %s to %s: %w", dataDir, target, err)
	}
	logger.Info("PostgreSQL's user cannot reach the data dir; keeping the cluster where it can, linked from the data dir",
		"data_dir", dataDir, "cluster_dir", target, "user", owner.name, "blocked_at", blocked)
	return target, nil
}

// firstBlocked returns the first ancestor of dir (or dir itself) that owner
// may not search according to its mode bits, or "" if none.
func firstBlocked(dir string, owner *credential) string {
	var chain []string
	for d := dir; ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	slices.Reverse(chain)
	for _, d := range chain {
		info, err := os.Stat(d)
		if err != nil {
			return d
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		mode := uint32(info.Mode().Perm())
		var searchable bool
		switch {
		case st.Uid == owner.uid:
			searchable = mode&0o100 != 0
		case st.Gid == owner.gid || slices.Contains(owner.groups, st.Gid):
			searchable = mode&0o010 != 0
		default:
			searchable = mode&0o001 != 0
		}
		if !searchable {
			return d
		}
	}
	return ""
}

// NewSocketDir makes a private directory for a server's socket, for
// Options.SocketDir: servers started again in it keep their URL. Remove it
// when done.
func NewSocketDir() (string, error) {
	owner, err := runAs()
	if err != nil {
		return "", err
	}
	return makeSocketDir(owner)
}

// makeSocketDir makes a private directory for the server's socket. Unix
// socket paths are limited to about 107 bytes, too few for a data dir deep in
// a project or test tree, so the socket lives under the temp dir instead (or
// /tmp, if even that is too long).
func makeSocketDir(owner *credential) (string, error) {
	parent := os.TempDir()
	// The longest name is the lock file next to the socket; MkdirTemp adds
	// "parley-pg" and up to 20 digits.
	if len(parent)+len("/parley-pg")+20+len("/.s.PGSQL."+port+".lock") > 107 {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "parley-pg")
	if err != nil {
		return "", fmt.Errorf("embedpg: create socket dir: %w", err)
	}
	if owner != nil {
		if err := os.Chown(dir, int(owner.uid), int(owner.gid)); err != nil {
			_ = os.Remove(dir)
			return "", fmt.Errorf("embedpg: give socket dir to user %s: %w", owner.name, err)
		}
		if blocker := firstBlocked(dir, owner); blocker != "" {
			_ = os.Remove(dir)
			return "", fmt.Errorf("embedpg: user %s may not enter %s, so it cannot create its socket in %s", owner.name, blocker, dir)
		}
	}
	return dir, nil
}

// readVersion returns the major version in dataDir/PG_VERSION, or "" if there
// is no cluster there.
func readVersion(dataDir string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// findBinDir picks the PostgreSQL installation to run.
func findBinDir(configured, clusterVersion string) (string, error) {
	if configured != "" {
		if !hasPrograms(configured) {
			return "", fmt.Errorf("embedpg: bin dir %s lacks postgres or initdb", configured)
		}
		return configured, nil
	}
	// Debian keeps old major versions installed after an upgrade; an existing
	// cluster only starts with the version that made it.
	if clusterVersion != "" {
		if dir := filepath.Join("/usr/lib/postgresql", clusterVersion, "bin"); hasPrograms(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin") // the pattern is valid
	dirs = slices.DeleteFunc(dirs, func(d string) bool { return !hasPrograms(d) })
	if len(dirs) > 0 {
		slices.SortFunc(dirs, func(a, b string) int {
			return compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
		})
		return dirs[len(dirs)-1], nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		for _, cand := range []string{p, resolve(p)} {
			if dir := filepath.Dir(cand); hasPrograms(dir) {
				return dir, nil
			}
		}
	}
	return "", errors.New("embedpg: no PostgreSQL installation found (looked in /usr/lib/postgresql/*/bin and for initdb on $PATH); install PostgreSQL (apt-get install postgresql) or configure a database URL")
}

func resolve(p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return p
	}
	return r
}

func hasPrograms(dir string) bool {
	for _, name := range []string{"postgres", "initdb"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.IsDir() || info.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// compareVersions orders version directory names such as "9.6" < "15" < "16".
// Names that are not numbers sort first.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		var na, nb int = -1, -1
		if i < len(pa) {
			if n, err := strconv.Atoi(pa[i]); err == nil {
				na = n
			}
		}
		if i < len(pb) {
			if n, err := strconv.Atoi(pb[i]); err == nil {
				nb = n
			}
		}
		if na != nb {
			return na - nb
		}
	}
	return strings.Compare(a, b)
}

func indent(lines []string) string {
	if len(lines) == 0 {
		return "\t(no output)"
	}
	return "\t" + strings.Join(lines, "\n\t")
}
