package main

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/parley-chat/parley/db/dbtest"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

func TestMain(m *testing.M) { os.Exit(dbtest.Main(m)) }

// addrWriter captures stdout and reports the address serve prints.
type addrWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
}

func newAddrWriter() *addrWriter { return &addrWriter{addr: make(chan string, 1)} }

func (w *addrWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, line := range strings.Split(w.buf.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "parley listening on "); ok {
			select {
			case w.addr <- strings.Fields(rest)[0]:
			default:
			}
		}
	}
	return len(p), nil
}

// syncBuffer is a bytes.Buffer safe to write from the server goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func envFrom(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// h2c is an HTTP client speaking HTTP/2 without TLS, as gRPC clients do
// against a plaintext server.
func h2c() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// startServe runs `parley serve` in the background and returns its base URL
// and a function that stops it (like SIGTERM) and returns run's error.
func startServe(t *testing.T, args []string, vars map[string]string) (string, func() error) {
	t.Helper()
	if !slices.Contains(args, "-data-dir") && vars["PARLEY_MEDIA_DIR"] == "" {
		// Media go under the data dir, by default ./data: not in the source tree.
		vars = maps.Clone(vars)
		if vars == nil {
			vars = map[string]string{}
		}
		vars["PARLEY_MEDIA_DIR"] = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := newAddrWriter(), &syncBuffer{}
	done := make(chan error, 1)
	started := time.Now()
	go func() {
		done <- run(ctx, append([]string{"serve", "-addr", "127.0.0.1:0"}, args...), envFrom(vars), stdout, stderr)
	}()
	select {
	case addr := <-stdout.addr:
		t.Logf("serve ready in %v", time.Since(started).Round(time.Millisecond))
		var once sync.Once
		var runErr error
		stop := func() error {
			once.Do(func() {
				cancel()
				select {
				case runErr = <-done:
				case <-time.After(60 * time.Second):
					t.Fatalf("serve did not stop; log:\n%s", stderr.String())
				}
			})
			return runErr
		}
		t.Cleanup(func() { _ = stop() })
		return "http://" + addr, stop
	case err := <-done:
		cancel()
		t.Fatalf("serve exited early: %v\nlog:\n%s", err, stderr.String())
	case <-time.After(90 * time.Second):
		cancel()
		t.Fatalf("serve did not start; log:\n%s", stderr.String())
	}
	return "", nil
}

// exercise registers (unless the user exists), logs in and calls GetMe over
// the gRPC protocol on h2c, and checks gRPC health.
func exercise(t *testing.T, baseURL, username string, register bool) {
	t.Helper()
	ctx := context.Background()
	hc := h2c()
	auth := parleyv1connect.NewAuthServiceClient(hc, baseURL, connect.WithGRPC())
	if register {
		if _, err := auth.Register(ctx, &parleyv1.RegisterRequest{Username: username, Password: "embedded password", DisplayName: "Embedded"}); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	login, err := auth.Login(ctx, &parleyv1.LoginRequest{Username: username, Password: "embedded password"})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	cctx, info := connect.NewClientContext(ctx)
	info.RequestHeader().Set("Authorization", "Bearer "+login.GetTokens().GetAccessToken())
	me, err := auth.GetMe(cctx, &parleyv1.GetMeRequest{})
	if err != nil {
		t.Fatalf("GetMe: %v", err)
	}
	if me.GetUser().GetUsername() != username {
		t.Fatalf("GetMe username = %q, want %q", me.GetUser().GetUsername(), username)
	}
	health := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](
		hc, baseURL+"/grpc.health.v1.Health/Check", connect.WithGRPC())
	res, err := health.CallUnary(ctx, connect.NewRequest(&healthpb.HealthCheckRequest{Service: parleyv1connect.AuthServiceName}))
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	if got := res.Msg.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, want SERVING", got)
	}
}

func TestServeEmbeddedPostgresKeepsDataAcrossRestarts(t *testing.T) {
	// The embedded server may run as the postgres user, which must reach the
	// data dir; t.TempDir's parents are private to root.
	dataDir, err := os.MkdirTemp("", "parley-serve-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	url, stop := startServe(t, []string{"-data-dir", dataDir}, map[string]string{"PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1"})
	exercise(t, url, "embedded_user", true)
	if err := stop(); err != nil {
		t.Fatalf("serve returned %v after shutdown, want nil", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("embedded PostgreSQL still running after shutdown (postmaster.pid: %v)", err)
	}

	url, stop = startServe(t, []string{"-data-dir", dataDir}, map[string]string{"PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1"})
	exercise(t, url, "embedded_user", false)
	if err := stop(); err != nil {
		t.Fatalf("second serve returned %v, want nil", err)
	}
}

func TestServeStoresMediaAndServesIt(t *testing.T) {
	url, stop := startServe(t, nil, map[string]string{"PARLEY_DATABASE_URL": dbtest.URL(t), "PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1"})
	defer stop()
	hc := h2c()
	ctx := context.Background()
	auth := parleyv1connect.NewAuthServiceClient(hc, url)
	if _, err := auth.Register(ctx, &parleyv1.RegisterRequest{Username: "uploader", Password: "embedded password", DisplayName: "U"}); err != nil {
		t.Fatal(err)
	}
	login, err := auth.Login(ctx, &parleyv1.LoginRequest{Username: "uploader", Password: "embedded password"})
	if err != nil {
		t.Fatal(err)
	}
	cctx, info := connect.NewClientContext(ctx)
	info.RequestHeader().Set("Authorization", "Bearer "+login.GetTokens().GetAccessToken())
	media := parleyv1connect.NewMediaServiceClient(hc, url, connect.WithGRPC())
	body := []byte("minutes of the meeting\n")
	up, err := media.CreateUpload(cctx, &parleyv1.CreateUploadRequest{
		Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain", SizeBytes: int64(len(body)), FileName: "minutes.txt",
	})
	if err != nil {
		t.Fatalf("CreateUpload: %v", err)
	}
	if !strings.HasPrefix(up.GetUploadUrl(), url+"/media/v1/") {
		t.Fatalf("got upload URL %q, want one on %s", up.GetUploadUrl(), url)
	}
	req, _ := http.NewRequest(up.GetUploadMethod(), up.GetUploadUrl(), bytes.NewReader(body))
	for k, v := range up.GetHeaders() {
		req.Header.Set(k, v)
	}
	res, err := hc.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("upload: %v %v", res, err)
	}
	res.Body.Close()
	if _, err := media.CompleteUpload(cctx, &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()}); err != nil {
		t.Fatalf("CompleteUpload: %v", err)
	}
	got, err := media.GetMedia(cctx, &parleyv1.GetMediaRequest{MediaId: up.GetMediaId()})
	if err != nil {
		t.Fatalf("GetMedia: %v", err)
	}
	res, err = hc.Get(got.GetDownloadUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !bytes.Equal(b, body) || res.Header.Get("Content-Disposition") != "attachment; filename=minutes.txt" {
		t.Errorf("download: HTTP %d, %q, Content-Disposition %q", res.StatusCode, b, res.Header.Get("Content-Disposition"))
	}
}

func TestServeUsesDatabaseURL(t *testing.T) {
	dbURL := dbtest.URL(t)
	url, stop := startServe(t, nil, map[string]string{"PARLEY_DATABASE_URL": dbURL, "PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1"})
	exercise(t, url, "external_user", true)
	if err := stop(); err != nil {
		t.Fatalf("serve returned %v after shutdown, want nil", err)
	}
}

// fsync can only be turned off server-wide, so the refusal is proved with
// synchronous_commit, which a database setting can turn off; both go through
// the same check in db.Open.
func TestServeRefusesDatabaseWithoutDurableCommits(t *testing.T) {
	dbURL := dbtest.URL(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	err = run(ctx, []string{"serve", "-addr", "127.0.0.1:0"}, envFrom(map[string]string{"PARLEY_DATABASE_URL": dbURL}), &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "synchronous_commit=off") {
		t.Fatalf("serve error = %v, want a refusal naming synchronous_commit=off", err)
	}
}

func TestCommands(t *testing.T) {
	ctx := context.Background()
	dbURL := dbtest.URL(t)
	tests := []struct {
		name    string
		args    []string
		vars    map[string]string
		wantErr string
		wantOut string
	}{
		{name: "no command is an error", args: nil, wantErr: "no command"},
		{name: "unknown command is an error", args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{name: "version prints the name", args: []string{"version"}, wantOut: "parley "},
		{name: "help prints usage", args: []string{"help"}, wantOut: "parley serve"},
		{name: "migrate applies migrations to a database", args: []string{"migrate"}, vars: map[string]string{"PARLEY_DATABASE_URL": dbURL}},
		{name: "half a TLS configuration is refused", args: []string{"serve", "-tls-cert", "cert.pem"}, wantErr: "PARLEY_TLS_CERT and PARLEY_TLS_KEY"},
		{name: "a bad duration in the environment is refused", args: []string{"serve"}, vars: map[string]string{"PARLEY_ACCESS_TOKEN_TTL": "soon"}, wantErr: "PARLEY_ACCESS_TOKEN_TTL"},
		{name: "a bad log level is refused", args: []string{"serve", "-log-level", "loud"}, vars: map[string]string{"PARLEY_DATABASE_URL": dbURL}, wantErr: "PARLEY_LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			err := run(ctx, tt.args, envFrom(tt.vars), &stdout, &stderr)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("run(%v) = %v, want nil", tt.args, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("run(%v) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Fatalf("stdout = %q, want it to contain %q", stdout.String(), tt.wantOut)
			}
		})
	}
}
