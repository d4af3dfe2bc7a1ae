package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/parley-chat/parley/db/dbtest"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRequestLogsNameTheCallButNeverSecrets(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	cfg := testConfig()
	cfg.Media.Dir = t.TempDir()
	s, err := server.New(context.Background(), dbtest.New(t), cfg,
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s.Handler())
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	c := parleyv1connect.NewAuthServiceClient(hs.Client(), hs.URL)
	ctx := context.Background()

	const password = "s3cret-pa55word"
	if _, err := c.Register(ctx, &parleyv1.RegisterRequest{Username: "logger", Password: password, DisplayName: "Log"}); err != nil {
		t.Fatal(err)
	}
	login, err := c.Login(ctx, &parleyv1.LoginRequest{Username: "logger", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	refreshed, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: login.GetTokens().GetRefreshToken()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetMe(bearer(refreshed.GetTokens().GetAccessToken()), &parleyv1.GetMeRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Login(ctx, &parleyv1.LoginRequest{Username: "logger", Password: "wrong-" + password})
	wantCode(t, err, connect.CodeUnauthenticated)

	out := logs.String()
	for _, want := range []string{
		"procedure=/parley.v1.AuthService/Register",
		"procedure=/parley.v1.AuthService/Login code=ok",
		"procedure=/parley.v1.AuthService/Login code=unauthenticated",
		"procedure=/parley.v1.AuthService/GetMe code=ok",
		"user_id=" + login.GetUser().GetId(),
		"duration=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	for name, secret := range map[string]string{
		"password":              password,
		"access token":          login.GetTokens().GetAccessToken(),
		"refresh token":         login.GetTokens().GetRefreshToken(),
		"rotated access token":  refreshed.GetTokens().GetAccessToken(),
		"rotated refresh token": refreshed.GetTokens().GetRefreshToken(),
	} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain the %s:\n%s", name, out)
		}
	}
}
