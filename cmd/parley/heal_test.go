package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/parley-chat/parley/db/embedpg"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// healDeadline bounds how long a test waits for the server to serve again
// after its database died.
const healDeadline = 30 * time.Second

// sender is a logged-in user who sends text to another user.
type sender struct {
	msgs parleyv1connect.MessagesServiceClient
	ctx  context.Context // carries the access token
	to   string
}

// newSender registers two users on the server at baseURL, makes them
// contacts (so that any number of messages may pass), and returns the first,
// ready to send to the second.
func newSender(t *testing.T, baseURL string) sender {
	t.Helper()
	ctx := context.Background()
	hc := h2c()
	auth := parleyv1connect.NewAuthServiceClient(hc, baseURL, connect.WithGRPC())
	const password = "quiet-lantern-orbit-7"
	if _, err := auth.Register(ctx, &parleyv1.RegisterRequest{Username: "heal_alice", Password: password, DisplayName: "Alice"}); err != nil {
		t.Fatalf("Register alice: %v", err)
	}
	bob, err := auth.Register(ctx, &parleyv1.RegisterRequest{Username: "heal_bob", Password: password, DisplayName: "Bob"})
	if err != nil {
		t.Fatalf("Register bob: %v", err)
	}
	as := func(username string) context.Context {
		login, err := auth.Login(ctx, &parleyv1.LoginRequest{Username: username, Password: password})
		if err != nil {
			t.Fatalf("Login %s: %v", username, err)
		}
		cctx, info := connect.NewClientContext(ctx)
		info.RequestHeader().Set("Authorization", "Bearer "+login.GetTokens().GetAccessToken())
		return cctx
	}
	cctx, bobCtx := as("heal_alice"), as("heal_bob")
	contacts := parleyv1connect.NewContactsServiceClient(hc, baseURL, connect.WithGRPC())
	req, err := contacts.SendFriendRequest(cctx, &parleyv1.SendFriendRequestRequest{UserId: bob.GetUser().GetId()})
	if err != nil {
		t.Fatalf("SendFriendRequest: %v", err)
	}
	if _, err := contacts.RespondFriendRequest(bobCtx, &parleyv1.RespondFriendRequestRequest{
		RequestId: req.GetFriendRequest().GetId(), Decision: parleyv1.FriendRequestDecision_FRIEND_REQUEST_DECISION_ACCEPT,
	}); err != nil {
		t.Fatalf("RespondFriendRequest: %v", err)
	}
	return sender{
		msgs: parleyv1connect.NewMessagesServiceClient(hc, baseURL, connect.WithGRPC()),
		ctx:  cctx,
		to:   bob.GetUser().GetId(),
	}
}

// send sends one text with clientID, bounded by timeout.
func (s sender) send(clientID string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	_, err := s.msgs.Send(ctx, &parleyv1.SendRequest{
		ClientMsgId: clientID,
		Target:      &parleyv1.SendRequest_UserId{UserId: s.to},
		Content:     &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: "hello " + clientID}},
	})
	return err
}

// sendUntil sends (each time a new message: one that failed may or may not
// be stored, which is the client's retry's business, not this test's) until
// a Send succeeds with done() true after it, or healDeadline passes. It
// returns how long that took and the codes of the failures on the way.
func (s sender) sendUntil(t *testing.T, done func() bool) (time.Duration, map[connect.Code]int) {
	t.Helper()
	began := time.Now()
	codes := map[connect.Code]int{}
	var last error
	for i := 0; time.Since(began) < healDeadline; i++ {
		err := s.send(fmt.Sprintf("after-kill-%d", i), 2*time.Second)
		if err == nil && done() {
			return time.Since(began), codes
		}
		if err != nil {
			codes[connect.CodeOf(err)]++
			last = err
		}
		time.Sleep(20 * time.Millisecond) // a client's retry interval, not a wait for an event
	}
	t.Fatalf("Send did not succeed within %s of the database dying; failures by code %v, last: %v", healDeadline, codes, last)
	return 0, nil
}

// postmasterPID reads the postmaster's pid from its lock file: 0 when there
// is none, or it is being written.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestServeRestartsKilledEmbeddedPostgres kills the embedded PostgreSQL's
// postmaster with SIGKILL under a running server: the server must restart it
// and serve Sends again without help, failing meanwhile only with retryable
// codes, and stay live.
func TestServeRestartsKilledEmbeddedPostgres(t *testing.T) {
	dataDir, err := os.MkdirTemp("", "parley-heal-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	url, stop := startServe(t, []string{"-data-dir", dataDir}, map[string]string{"PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1"})
	s := newSender(t, url)
	if err := s.send("before-kill", 10*time.Second); err != nil {
		t.Fatalf("Send before the kill: %v", err)
	}
	pgDir, err := filepath.EvalSymlinks(filepath.Join(dataDir, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	pid := postmasterPID(pgDir)
	if pid == 0 {
		t.Fatal("no postmaster.pid")
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill postmaster %d: %v", pid, err)
	}
	// Backends the dead postmaster left behind may still commit a Send or
	// two (durably: they flush their own WAL) before they notice; what
	// counts is a Send served by the new postmaster.
	restarted := func() bool {
		p := postmasterPID(pgDir)
		return p != 0 && p != pid
	}
	took, codes := s.sendUntil(t, restarted)
	t.Logf("kill to first successful Send on the restarted PostgreSQL: %v (failures on the way by code: %v)", took.Round(time.Millisecond), codes)
	for code, n := range codes {
		if code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded {
			t.Errorf("%d Sends failed with %v while the database was down; want only Unavailable (or the client's own deadline)", n, code)
		}
	}
	if got := httpStatus(t, url+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz after recovery: HTTP %d, want 200", got)
	}
	if got := httpStatus(t, url+"/readyz"); got != http.StatusOK {
		t.Errorf("/readyz after recovery: HTTP %d, want 200", got)
	}
	if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("serve returned %v after shutdown, want nil", err)
	}
}

// TestServeRecoversWhenExternalDatabaseReturns runs serve on an external
// database (a private PostgreSQL this test owns, so that it can stop and
// start it at the same URL; never the shared one): while it is down every
// RPC that needs it answers Unavailable, liveness holds and readiness fails;
// when it is back, the server serves again by itself.
func TestServeRecoversWhenExternalDatabaseReturns(t *testing.T) {
	ctx := context.Background()
	dataDir, err := os.MkdirTemp("", "parley-heal-ext-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	if err := os.Chmod(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sockDir, err := embedpg.NewSocketDir()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	opts := embedpg.Options{DataDir: filepath.Join(dataDir, "pg"), SocketDir: sockDir}
	pg, err := embedpg.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	if err := createDatabase(ctx, pg.URL("postgres"), "parley"); err != nil {
		t.Fatal(err)
	}

	url, stop := startServe(t, nil, map[string]string{"PARLEY_DATABASE_URL": pg.URL("parley"), "PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1"})
	s := newSender(t, url)
	if err := s.send("before-stop", 10*time.Second); err != nil {
		t.Fatalf("Send before the database stopped: %v", err)
	}

	if err := pg.Stop(ctx); err != nil {
		t.Fatalf("stop database: %v", err)
	}
	calls := map[string]func() error{
		"Send": func() error { return s.send("while-down", 5*time.Second) },
		"ListConversations": func() error {
			_, err := s.msgs.ListConversations(s.ctx, &parleyv1.ListConversationsRequest{})
			return err
		},
		"CreateDirectConversation": func() error {
			_, err := s.msgs.CreateDirectConversation(s.ctx, &parleyv1.CreateDirectConversationRequest{UserId: s.to})
			return err
		},
		"Login": func() error {
			auth := parleyv1connect.NewAuthServiceClient(h2c(), url, connect.WithGRPC())
			_, err := auth.Login(ctx, &parleyv1.LoginRequest{Username: "heal_bob", Password: "quiet-lantern-orbit-7"})
			return err
		},
	}
	for name, call := range calls {
		// Twice: the first may meet a pooled connection the shutdown ended,
		// the second a dial to no server.
		for i := range 2 {
			if code := connect.CodeOf(call()); code != connect.CodeUnavailable {
				t.Errorf("%s #%d while the database is down: code %v, want unavailable", name, i+1, code)
			}
		}
	}
	if got := httpStatus(t, url+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz while an external database is down: HTTP %d, want 200 (restarting parley would not help)", got)
	}
	if got := httpStatus(t, url+"/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the database is down: HTTP %d, want 503", got)
	}

	if pg, err = embedpg.Start(ctx, opts); err != nil {
		t.Fatalf("start database again: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop(context.Background()) })
	took, codes := s.sendUntil(t, func() bool { return true })
	t.Logf("database back to first successful Send: %v (failures on the way by code: %v)", took.Round(time.Millisecond), codes)
	for code, n := range codes {
		if code != connect.CodeUnavailable {
			t.Errorf("%d Sends failed with %v after the database came back; want only Unavailable", n, code)
		}
	}
	for name, call := range calls {
		if name == "Send" {
			continue
		}
		if err := call(); err != nil {
			t.Errorf("%s after the database came back: %v", name, err)
		}
	}
	if got := httpStatus(t, url+"/readyz"); got != http.StatusOK {
		t.Errorf("/readyz after the database came back: HTTP %d, want 200", got)
	}
	if err := stop(); err != nil {
		t.Errorf("serve returned %v after shutdown, want nil", err)
	}
}
