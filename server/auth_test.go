package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		ctx := context.Background()

		res, err := c.Register(ctx, &parleyv1.RegisterRequest{
			Username: "Alice", Password: "correct horse", DisplayName: "  Alice Liddell ",
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		u := res.GetUser()
		if u.GetId() == "" || u.GetCreateTime() == nil {
			t.Errorf("got user %v, want an id and a create time", u)
		}
		if got, want := u.GetUsername(), "alice"; got != want {
			t.Errorf("got username %q, want %q", got, want)
		}
		if got, want := u.GetDisplayName(), "Alice Liddell"; got != want {
			t.Errorf("got display name %q, want %q", got, want)
		}
		var stored string
		if err := e.db.Pool().QueryRow(ctx, "SELECT username FROM users WHERE id = $1", u.GetId()).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if stored != "alice" {
			t.Errorf("got stored username %q, want %q", stored, "alice")
		}

		for _, name := range []string{"alice", "ALICE", "aLiCe"} {
			_, err := c.Register(ctx, &parleyv1.RegisterRequest{Username: name, Password: "another password", DisplayName: "Impostor"})
			wantCode(t, err, connect.CodeAlreadyExists)
		}
		if got := e.count("users"); got != 1 {
			t.Errorf("got %d users, want 1", got)
		}

		// The username works in any case at login.
		if _, err := login(c, "ALICE", "correct horse"); err != nil {
			t.Errorf("Login in upper case: %v", err)
		}
	})
}

func TestRegisterAcceptsTheBoundaries(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		for _, req := range []*parleyv1.RegisterRequest{
			{Username: "abc", Password: "7 zebras", DisplayName: "A"},
			{Username: strings.Repeat("z", 32), Password: strings.Repeat("pq", 128), DisplayName: strings.Repeat("d", 64)},
			{Username: "a.b_c9", Password: "éàüößçñø", DisplayName: "Ünïcödé 名前"},
		} {
			if _, err := c.Register(context.Background(), req); err != nil {
				t.Errorf("Register(%q): %v", req.GetUsername(), err)
			}
		}
	})
}

func TestRegisterRejectsBadInputAndWritesNothing(t *testing.T) {
	t.Parallel()
	valid := func(edit func(*parleyv1.RegisterRequest)) *parleyv1.RegisterRequest {
		req := &parleyv1.RegisterRequest{Username: "valid_name", Password: "long enough", DisplayName: "Valid"}
		edit(req)
		return req
	}
	tests := []struct {
		name  string
		req   *parleyv1.RegisterRequest
		field string
	}{
		{"a username of two characters is too short", valid(func(r *parleyv1.RegisterRequest) { r.Username = "ab" }), "username"},
		{"an empty username is too short", valid(func(r *parleyv1.RegisterRequest) { r.Username = "" }), "username"},
		{"a username of 33 characters is too long", valid(func(r *parleyv1.RegisterRequest) { r.Username = strings.Repeat("a", 33) }), "username"},
		{"a username with a hyphen", valid(func(r *parleyv1.RegisterRequest) { r.Username = "bad-name" }), "username"},
		{"a username with a space", valid(func(r *parleyv1.RegisterRequest) { r.Username = "bad name" }), "username"},
		{"a username with a letter outside ASCII", valid(func(r *parleyv1.RegisterRequest) { r.Username = "émile" }), "username"},
		{"a username with a trailing newline", valid(func(r *parleyv1.RegisterRequest) { r.Username = "newline\n" }), "username"},
		{"a password of 7 characters", valid(func(r *parleyv1.RegisterRequest) { r.Password = "1234567" }), "password"},
		{"a password of 257 characters", valid(func(r *parleyv1.RegisterRequest) { r.Password = strings.Repeat("p", 257) }), "password"},
		{"an empty display name", valid(func(r *parleyv1.RegisterRequest) { r.DisplayName = "" }), "display_name"},
		{"a blank display name", valid(func(r *parleyv1.RegisterRequest) { r.DisplayName = " \t " }), "display_name"},
		{"a display name of 65 characters", valid(func(r *parleyv1.RegisterRequest) { r.DisplayName = strings.Repeat("d", 65) }), "display_name"},
	}
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := c.Register(context.Background(), tt.req)
				wantCode(t, err, connect.CodeInvalidArgument)
				if got := violatedFields(t, err); !slices.Contains(got, tt.field) {
					t.Errorf("got field violations %v, want one for %s", got, tt.field)
				}
				if got := e.in(t).count("users"); got != 0 {
					t.Errorf("got %d users after a failed Register, want 0", got)
				}
			})
		}
	})
}

func TestGuessablePasswordsAreRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		password string
		rule     string // the rule id the refusal names; empty: accepted
	}{
		{"one of the most common passwords", "12345678", "parley.password.common"},
		{"a common password in other case", "PassWord1", "parley.password.common"},
		{"a common password of 10 characters", "1234567890", "parley.password.common"},
		{"eight spaces", "        ", "parley.password.blank"},
		{"tabs and newlines", "\t\t\n\n\t\t\n\n", "parley.password.blank"},
		{"one letter repeated", "aaaaaaaaaaaa", "parley.password.repeated"},
		{"one accented letter repeated", "éééééééé", "parley.password.repeated"},
		{"the username itself", "gina_lee", "parley.password.username"},
		{"the username in other case", "GINA_LEE", "parley.password.username"},
		{"the username with a suffix", "Gina_Lee1990!", "parley.password.username"},
		{"the username inside a phrase", "i am gina_lee, hi", "parley.password.username"},
		{"a strong passphrase", "velvet orbit 42 tundra", ""},
		{"a part of the username", "gina plus something", ""},
	}
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t)
				c := e.auth(opts...)

				_, err := c.Register(context.Background(), &parleyv1.RegisterRequest{Username: "Gina_Lee", Password: tt.password, DisplayName: "Gina"})
				if tt.rule == "" {
					if err != nil {
						t.Fatalf("Register with %q: %v", tt.password, err)
					}
					if _, err := login(c, "gina_lee", tt.password); err != nil {
						t.Errorf("Login with the password just set: %v", err)
					}
				} else {
					wantViolation(t, err, "password", tt.rule)
					if got := e.count("users"); got != 0 {
						t.Errorf("got %d users after a refused Register, want 0", got)
					}
				}

				// The same rules hold when the password is changed.
				gina := e.signUp("gina_lee8", opts...)
				password := strings.ReplaceAll(tt.password, "gina_lee", "gina_lee8")
				password = strings.ReplaceAll(password, "GINA_LEE", "GINA_LEE8")
				password = strings.ReplaceAll(password, "Gina_Lee", "Gina_Lee8")
				hash := passwordHash(t, e, "gina_lee8")
				_, err = c.ChangePassword(gina.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: gina.password, NewPassword: password})
				if tt.rule == "" {
					if err != nil {
						t.Fatalf("ChangePassword to %q: %v", password, err)
					}
					return
				}
				wantViolation(t, err, "new_password", tt.rule)
				if got := passwordHash(t, e, "gina_lee8"); got != hash {
					t.Errorf("a refused ChangePassword changed the password hash")
				}
			})
		}
	})
}

// wantViolation fails the test unless err is InvalidArgument with a violation
// of rule on field.
func wantViolation(t testing.TB, err error, field, rule string) {
	t.Helper()
	wantCode(t, err, connect.CodeInvalidArgument)
	for _, d := range details(t, err) {
		v, ok := d.(*validate.Violations)
		if !ok {
			continue
		}
		for _, v := range v.GetViolations() {
			if len(v.GetField().GetElements()) == 1 && v.GetField().GetElements()[0].GetFieldName() == field && v.GetRuleId() == rule {
				return
			}
		}
	}
	t.Fatalf("got error %q with details %v, want a violation of %s on %s", errorMessage(err), details(t, err), rule, field)
}

func TestLogin(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		ctx := context.Background()
		bob := e.register("bob", "Bob", opts...)

		before := time.Now()
		res, err := c.Login(ctx, &parleyv1.LoginRequest{
			Username: "bob", Password: passwordOf("bob"), DeviceName: " Bob's phone ", Platform: parleyv1.Platform_PLATFORM_ANDROID,
		})
		if err != nil {
			t.Fatalf("Login: %v", err)
		}
		if diff := cmp.Diff(bob, res.GetUser(), protocmp.Transform()); diff != "" {
			t.Errorf("Login user differs from the registered one (-want +got):\n%s", diff)
		}
		toks := res.GetTokens()
		if toks.GetAccessToken() == "" || toks.GetRefreshToken() == "" || toks.GetSessionId() == "" {
			t.Fatalf("got tokens %v, want an access token, a refresh token and a session id", toks)
		}
		if exp := toks.GetAccessTokenExpireTime().AsTime(); exp.Before(before) || exp.After(before.Add(16*time.Minute)) {
			t.Errorf("got access token expiry %v, want about 15 minutes after %v", exp, before)
		}
		if !toks.GetRefreshTokenExpireTime().AsTime().After(toks.GetAccessTokenExpireTime().AsTime()) {
			t.Errorf("got refresh token expiry %v, want it after the access token's %v",
				toks.GetRefreshTokenExpireTime().AsTime(), toks.GetAccessTokenExpireTime().AsTime())
		}

		authed := bearer(toks.GetAccessToken())
		me, err := c.GetMe(authed, &parleyv1.GetMeRequest{})
		if err != nil {
			t.Fatalf("GetMe with the new access token: %v", err)
		}
		if diff := cmp.Diff(bob, me.GetUser(), protocmp.Transform()); diff != "" {
			t.Errorf("GetMe user differs from the registered one (-want +got):\n%s", diff)
		}
		sessions, err := c.ListSessions(authed, &parleyv1.ListSessionsRequest{})
		if err != nil {
			t.Fatalf("ListSessions: %v", err)
		}
		if got := sessions.GetSessions(); len(got) != 1 {
			t.Fatalf("got %d sessions, want 1", len(got))
		}
		s := sessions.GetSessions()[0]
		if s.GetId() != toks.GetSessionId() || !s.GetCurrent() {
			t.Errorf("got session %s (current %v), want %s as the current one", s.GetId(), s.GetCurrent(), toks.GetSessionId())
		}
		if s.GetDeviceName() != "Bob's phone" || s.GetPlatform() != parleyv1.Platform_PLATFORM_ANDROID {
			t.Errorf("got device %q on %v, want %q on %v", s.GetDeviceName(), s.GetPlatform(), "Bob's phone", parleyv1.Platform_PLATFORM_ANDROID)
		}
	})
}

func TestLoginFailsTheSameWayForUnknownUsersAndWrongPasswords(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		e.register("carol", "Carol", opts...)

		_, unknown := login(c, "nobody", passwordOf("carol"))
		_, wrong := login(c, "carol", "wrong password")
		wantCode(t, unknown, connect.CodeUnauthenticated)
		wantCode(t, wrong, connect.CodeUnauthenticated)
		if a, b := errorMessage(unknown), errorMessage(wrong); a != b {
			t.Errorf("unknown user says %q but wrong password says %q; they must not tell the two apart", a, b)
		}
		if got := e.count("sessions"); got != 0 {
			t.Errorf("got %d sessions after failed logins, want 0", got)
		}
	})
}

func TestLoginThrottling(t *testing.T) {
	t.Parallel()
	limit := server.Rate{Burst: 3, Per: time.Hour}

	t.Run("registrations per address", func(t *testing.T) {
		t.Parallel()
		forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
			t.Parallel()
			e := newEnv(t, func(c *server.Config) { c.RegisterPerAddress = limit })
			c := e.auth(opts...)
			for i := range limit.Burst {
				e.register(fmt.Sprintf("user%d", i), "User", opts...)
			}
			_, err := c.Register(context.Background(), &parleyv1.RegisterRequest{Username: "onemore", Password: "long enough", DisplayName: "One more"})
			wantCode(t, err, connect.CodeResourceExhausted)
			if d := retryDelay(t, err); d <= 0 {
				t.Errorf("got retry delay %v, want a positive one", d)
			}
			if got := e.count("users"); got != limit.Burst {
				t.Errorf("got %d users, want %d", got, limit.Burst)
			}
			if _, err := login(c, "user0", passwordOf("user0")); err != nil {
				t.Errorf("the registration limit blocks Login: %v", err)
			}
		})
	})
}

func TestLoginRehashesPasswordsMadeWithOtherParameters(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		old := newEnv(t, func(c *server.Config) {
			c.Password = server.PasswordParams{MemoryKiB: 64, Iterations: 1, Parallelism: 1}
		})
		old.register("dave", "Dave", opts...)
		before := passwordHash(t, old, "dave")
		if !strings.HasPrefix(before, "$argon2id$") || !strings.Contains(before, "$m=64,t=1,p=1$") {
			t.Fatalf("got hash %q, want argon2id with m=64,t=1,p=1", before)
		}

		upgraded := newEnvOn(t, old.db, func(c *server.Config) {
			c.Password = server.PasswordParams{MemoryKiB: 128, Iterations: 2, Parallelism: 1}
		})
		c := upgraded.auth(opts...)
		_, err := login(c, "dave", "wrong password")
		wantCode(t, err, connect.CodeUnauthenticated)
		if got := passwordHash(t, upgraded, "dave"); got != before {
			t.Errorf("a wrong password changed the hash from %q to %q", before, got)
		}

		if _, err := login(c, "dave", passwordOf("dave")); err != nil {
			t.Fatalf("Login: %v", err)
		}
		after := passwordHash(t, upgraded, "dave")
		if !strings.HasPrefix(after, "$argon2id$") || !strings.Contains(after, "$m=128,t=2,p=1$") {
			t.Errorf("got hash %q after login, want argon2id with m=128,t=2,p=1", after)
		}
		if _, err := login(c, "dave", passwordOf("dave")); err != nil {
			t.Errorf("Login after the rehash: %v", err)
		}
		if got := passwordHash(t, upgraded, "dave"); got != after {
			t.Errorf("a current hash was rehashed again: %q became %q", after, got)
		}
	})
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		ctx := context.Background()

		t.Run("returns a new pair that works", func(t *testing.T) {
			a := e.in(t).signUp("erin", opts...)
			res, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: a.tokens.GetRefreshToken()})
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			next := res.GetTokens()
			if next.GetRefreshToken() == "" || next.GetRefreshToken() == a.tokens.GetRefreshToken() {
				t.Errorf("got refresh token %q, want a new one", next.GetRefreshToken())
			}
			if next.GetSessionId() != a.tokens.GetSessionId() {
				t.Errorf("got session %s, want the same session %s", next.GetSessionId(), a.tokens.GetSessionId())
			}
			me, err := c.GetMe(bearer(next.GetAccessToken()), &parleyv1.GetMeRequest{})
			if err != nil {
				t.Fatalf("GetMe with the new access token: %v", err)
			}
			if me.GetUser().GetId() != a.user.GetId() {
				t.Errorf("got user %s, want %s", me.GetUser().GetId(), a.user.GetId())
			}
			// The new refresh token is itself good for one more refresh.
			if _, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: next.GetRefreshToken()}); err != nil {
				t.Errorf("Refresh with the rotated token: %v", err)
			}
		})

		t.Run("a spent refresh token revokes the session", func(t *testing.T) {
			a := e.in(t).signUp("frank", opts...)
			other, err := login(c, "frank", a.password)
			if err != nil {
				t.Fatal(err)
			}
			first := a.tokens.GetRefreshToken()
			latest := a.tokens
			for range 2 {
				res, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: latest.GetRefreshToken()})
				if err != nil {
					t.Fatalf("Refresh: %v", err)
				}
				latest = res.GetTokens()
			}

			_, err = c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: first})
			wantCode(t, err, connect.CodeUnauthenticated)
			_, err = c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: latest.GetRefreshToken()})
			wantCode(t, err, connect.CodeUnauthenticated)
			_, err = c.GetMe(bearer(latest.GetAccessToken()), &parleyv1.GetMeRequest{})
			wantCode(t, err, connect.CodeUnauthenticated)

			// Only the compromised session ends.
			if _, err := c.GetMe(bearer(other.GetTokens().GetAccessToken()), &parleyv1.GetMeRequest{}); err != nil {
				t.Errorf("the user's other session was revoked too: %v", err)
			}
		})

		t.Run("an unknown refresh token is refused", func(t *testing.T) {
			for _, token := range []string{"not-a-token", randomToken()} {
				_, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: token})
				wantCode(t, err, connect.CodeUnauthenticated)
			}
		})

		t.Run("an expired refresh token is refused", func(t *testing.T) {
			e := newEnv(t, func(c *server.Config) { c.RefreshTokenTTL = time.Millisecond })
			a := e.signUp("expiring", opts...)
			time.Sleep(10 * time.Millisecond)
			_, err := e.auth(opts...).Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: a.tokens.GetRefreshToken()})
			wantCode(t, err, connect.CodeUnauthenticated)
			if !strings.Contains(errorMessage(err), "expired") {
				t.Errorf("got message %q, want it to say the token expired", errorMessage(err))
			}
			// The session ended with its refresh token, and its access token with it.
			_, err = e.auth(opts...).GetMe(a.ctx(), &parleyv1.GetMeRequest{})
			wantCode(t, err, connect.CodeUnauthenticated)
		})

		t.Run("an empty refresh token is bad input", func(t *testing.T) {
			_, err := c.Refresh(ctx, &parleyv1.RefreshRequest{})
			wantCode(t, err, connect.CodeInvalidArgument)
		})

		t.Run("of concurrent refreshes with one token at most one succeeds", func(t *testing.T) {
			a := e.in(t).signUp("grace", opts...)
			const n = 8
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					_, errs[i] = c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: a.tokens.GetRefreshToken()})
				})
			}
			wg.Wait()
			succeeded := 0
			for _, err := range errs {
				switch {
				case err == nil:
					succeeded++
				case connect.CodeOf(err) != connect.CodeUnauthenticated:
					t.Errorf("got error %v (code %v), want success or code %v", err, connect.CodeOf(err), connect.CodeUnauthenticated)
				}
			}
			if succeeded > 1 {
				t.Errorf("%d of %d concurrent refreshes with one token succeeded, want at most 1", succeeded, n)
			}
		})
	})
}

func TestLogout(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		a := e.signUp("heidi", opts...)
		other, err := login(c, "heidi", a.password)
		if err != nil {
			t.Fatal(err)
		}

		if _, err := c.Logout(a.ctx(), &parleyv1.LogoutRequest{}); err != nil {
			t.Fatalf("Logout: %v", err)
		}
		_, err = c.GetMe(a.ctx(), &parleyv1.GetMeRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)
		_, err = c.Refresh(context.Background(), &parleyv1.RefreshRequest{RefreshToken: a.tokens.GetRefreshToken()})
		wantCode(t, err, connect.CodeUnauthenticated)
		_, err = c.Logout(a.ctx(), &parleyv1.LogoutRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)

		if _, err := c.GetMe(bearer(other.GetTokens().GetAccessToken()), &parleyv1.GetMeRequest{}); err != nil {
			t.Errorf("Logout ended the user's other session too: %v", err)
		}
	})
}

func TestSessions(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		ctx := context.Background()
		ivan := e.signUp("ivan", opts...)
		judy := e.signUp("judy", opts...)

		t.Run("two logins give two sessions, one of them current", func(t *testing.T) {
			tablet, err := c.Login(ctx, &parleyv1.LoginRequest{
				Username: "ivan", Password: ivan.password, DeviceName: "tablet", Platform: parleyv1.Platform_PLATFORM_IOS,
			})
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.ListSessions(ivan.ctx(), &parleyv1.ListSessionsRequest{})
			if err != nil {
				t.Fatalf("ListSessions: %v", err)
			}
			var ids, current []string
			for _, s := range res.GetSessions() {
				ids = append(ids, s.GetId())
				if s.GetCurrent() {
					current = append(current, s.GetId())
				}
			}
			slices.Sort(ids)
			want := []string{ivan.tokens.GetSessionId(), tablet.GetTokens().GetSessionId()}
			slices.Sort(want)
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("sessions differ (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{ivan.tokens.GetSessionId()}, current); diff != "" {
				t.Errorf("current sessions differ (-want +got):\n%s", diff)
			}

			// The tablet's token was just checked, so this node remembers its
			// session as active; the revocation must end it all the same.
			tabletCtx := bearer(tablet.GetTokens().GetAccessToken())
			if _, err := c.GetMe(tabletCtx, &parleyv1.GetMeRequest{}); err != nil {
				t.Fatalf("GetMe on the tablet: %v", err)
			}
			if _, err := c.RevokeSession(ivan.ctx(), &parleyv1.RevokeSessionRequest{SessionId: tablet.GetTokens().GetSessionId()}); err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			_, err = c.GetMe(tabletCtx, &parleyv1.GetMeRequest{})
			wantCode(t, err, connect.CodeUnauthenticated)
			_, err = c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: tablet.GetTokens().GetRefreshToken()})
			wantCode(t, err, connect.CodeUnauthenticated)
			res, err = c.ListSessions(ivan.ctx(), &parleyv1.ListSessionsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(res.GetSessions()); got != 1 {
				t.Errorf("got %d sessions after revoking one, want 1", got)
			}

			// Revoked is revoked: a second time finds nothing.
			_, err = c.RevokeSession(ivan.ctx(), &parleyv1.RevokeSessionRequest{SessionId: tablet.GetTokens().GetSessionId()})
			wantCode(t, err, connect.CodeNotFound)
		})

		t.Run("revoking by an upper-case id ends the session at once", func(t *testing.T) {
			laptop, err := login(c, "ivan", ivan.password)
			if err != nil {
				t.Fatal(err)
			}
			laptopCtx := bearer(laptop.GetTokens().GetAccessToken())
			if _, err := c.GetMe(laptopCtx, &parleyv1.GetMeRequest{}); err != nil {
				t.Fatalf("GetMe on the laptop: %v", err)
			}
			if _, err := c.RevokeSession(ivan.ctx(), &parleyv1.RevokeSessionRequest{SessionId: strings.ToUpper(laptop.GetTokens().GetSessionId())}); err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			_, err = c.GetMe(laptopCtx, &parleyv1.GetMeRequest{})
			wantCode(t, err, connect.CodeUnauthenticated)
		})

		t.Run("another user's session cannot be revoked", func(t *testing.T) {
			_, err := c.RevokeSession(ivan.ctx(), &parleyv1.RevokeSessionRequest{SessionId: judy.tokens.GetSessionId()})
			wantCode(t, err, connect.CodeNotFound)
			if _, err := c.GetMe(judy.ctx(), &parleyv1.GetMeRequest{}); err != nil {
				t.Errorf("judy's session stopped working: %v", err)
			}
		})

		t.Run("the most recently used session comes first", func(t *testing.T) {
			kate := e.in(t).signUp("kate", opts...)
			second, err := login(c, "kate", kate.password)
			if err != nil {
				t.Fatal(err)
			}
			order := func() []string {
				t.Helper()
				res, err := c.ListSessions(kate.ctx(), &parleyv1.ListSessionsRequest{})
				if err != nil {
					t.Fatalf("ListSessions: %v", err)
				}
				var ids []string
				for _, s := range res.GetSessions() {
					ids = append(ids, s.GetId())
				}
				return ids
			}
			first := kate.tokens.GetSessionId()
			if diff := cmp.Diff([]string{second.GetTokens().GetSessionId(), first}, order()); diff != "" {
				t.Errorf("sessions after two logins differ (-want +got):\n%s", diff)
			}
			if _, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: kate.tokens.GetRefreshToken()}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{first, second.GetTokens().GetSessionId()}, order()); diff != "" {
				t.Errorf("sessions after refreshing the first differ (-want +got):\n%s", diff)
			}
		})

		t.Run("an unknown session is not found", func(t *testing.T) {
			_, err := c.RevokeSession(ivan.ctx(), &parleyv1.RevokeSessionRequest{SessionId: newUUID()})
			wantCode(t, err, connect.CodeNotFound)
		})

		t.Run("a session id that is no uuid is bad input", func(t *testing.T) {
			for _, id := range []string{"", "not-a-uuid", "'; DROP TABLE sessions; --"} {
				_, err := c.RevokeSession(ivan.ctx(), &parleyv1.RevokeSessionRequest{SessionId: id})
				wantCode(t, err, connect.CodeInvalidArgument)
			}
		})
	})
}

// TestSessionRevocationReachesOtherNodes runs two servers on one database, as
// a deployment of two nodes would: a token from one works on the other, and a
// logout on one is noticed by the other within the session cache TTL.
func TestSessionRevocationReachesOtherNodes(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	cacheTTL := func(c *server.Config) { c.SessionCacheTTL = ttl }
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		a := newEnv(t, cacheTTL)
		b := newEnvOn(t, a.db, cacheTTL)
		kim := a.signUp("kim", opts...)

		if _, err := b.auth(opts...).GetMe(kim.ctx(), &parleyv1.GetMeRequest{}); err != nil {
			t.Fatalf("a token from node A does not work on node B: %v", err)
		}
		if _, err := a.auth(opts...).Logout(kim.ctx(), &parleyv1.LogoutRequest{}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(ttl + 2*time.Second)
		for {
			_, err := b.auth(opts...).GetMe(kim.ctx(), &parleyv1.GetMeRequest{})
			if connect.CodeOf(err) == connect.CodeUnauthenticated {
				break
			}
			if err != nil {
				t.Fatalf("GetMe on node B: %v", err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("node B still accepts a revoked session's token %v after the logout", ttl+2*time.Second)
			}
			time.Sleep(ttl / 10)
		}
	})
}

func TestProtectedProceduresNeedAValidAccessToken(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		liz := e.signUp("liz", opts...)
		key, err := e.db.GetServerSecret(context.Background(), "access_token_hmac_sha256")
		if err != nil {
			t.Fatalf("read the signing key: %v", err)
		}
		claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
			m := jwt.MapClaims{}
			if _, _, err := jwt.NewParser().ParseUnverified(liz.tokens.GetAccessToken(), m); err != nil {
				t.Fatalf("parse access token: %v", err)
			}
			edit(m)
			return m
		}
		unchanged := func(jwt.MapClaims) {}
		now := time.Now()

		tokens := []struct {
			name    string
			token   string // empty: no Authorization header
			message string // what the error must say, if anything
		}{
			{name: "no token", message: "missing access token"},
			{name: "a garbage token", token: "garbage"},
			{name: "a token signed with another key", token: sign(t, jwt.SigningMethodHS256, claims(unchanged), randomBytes(32))},
			{name: "an unsigned token", token: sign(t, jwt.SigningMethodNone, claims(unchanged), jwt.UnsafeAllowNoneSignatureType)},
			{name: "an expired token", message: "expired", token: sign(t, jwt.SigningMethodHS256, claims(func(m jwt.MapClaims) {
				m["iat"] = now.Add(-time.Hour).Unix()
				m["exp"] = now.Add(-time.Minute).Unix()
			}), key)},
			{name: "a token without an expiry", token: sign(t, jwt.SigningMethodHS256, claims(func(m jwt.MapClaims) { delete(m, "exp") }), key)},
			{name: "a token from another issuer", token: sign(t, jwt.SigningMethodHS256, claims(func(m jwt.MapClaims) { m["iss"] = "elsewhere" }), key)},
			{name: "a token without a session", token: sign(t, jwt.SigningMethodHS256, claims(func(m jwt.MapClaims) { delete(m, "sid") }), key)},
			{name: "a token of an unknown session", token: sign(t, jwt.SigningMethodHS256, claims(func(m jwt.MapClaims) { m["sid"] = newUUID() }), key)},
		}
		protected := []struct {
			name string
			call func(context.Context) error
		}{
			{"GetMe", func(ctx context.Context) error { _, err := c.GetMe(ctx, &parleyv1.GetMeRequest{}); return err }},
			{"ListSessions", func(ctx context.Context) error {
				_, err := c.ListSessions(ctx, &parleyv1.ListSessionsRequest{})
				return err
			}},
			{"UpdateProfile", func(ctx context.Context) error {
				_, err := c.UpdateProfile(ctx, &parleyv1.UpdateProfileRequest{DisplayName: proto.String("Mallory")})
				return err
			}},
			{"ChangePassword", func(ctx context.Context) error {
				_, err := c.ChangePassword(ctx, &parleyv1.ChangePasswordRequest{CurrentPassword: liz.password, NewPassword: "stolen password"})
				return err
			}},
			{"GetUsers", func(ctx context.Context) error {
				_, err := c.GetUsers(ctx, &parleyv1.GetUsersRequest{UserIds: []string{liz.user.GetId()}})
				return err
			}},
			{"SearchUsers", func(ctx context.Context) error {
				_, err := c.SearchUsers(ctx, &parleyv1.SearchUsersRequest{Query: "liz"})
				return err
			}},
			{"UpdatePrivacy", func(ctx context.Context) error {
				_, err := c.UpdatePrivacy(ctx, &parleyv1.UpdatePrivacyRequest{MessagePrivacy: parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE})
				return err
			}},
			{"Logout", func(ctx context.Context) error { _, err := c.Logout(ctx, &parleyv1.LogoutRequest{}); return err }},
			{"RevokeSession", func(ctx context.Context) error {
				_, err := c.RevokeSession(ctx, &parleyv1.RevokeSessionRequest{SessionId: liz.tokens.GetSessionId()})
				return err
			}},
		}

		for _, tok := range tokens {
			ctx := context.Background()
			if tok.token != "" {
				ctx = bearer(tok.token)
			}
			for _, p := range protected {
				t.Run(p.name+" refuses "+tok.name, func(t *testing.T) {
					err := p.call(ctx)
					wantCode(t, err, connect.CodeUnauthenticated)
					if !strings.Contains(errorMessage(err), tok.message) {
						t.Errorf("got message %q, want it to mention %q", errorMessage(err), tok.message)
					}
				})
			}
		}

		t.Run("nothing was changed by the refused calls", func(t *testing.T) {
			me, err := c.GetMe(liz.ctx(), &parleyv1.GetMeRequest{})
			if err != nil {
				t.Fatalf("GetMe with the valid token: %v", err)
			}
			if diff := cmp.Diff(liz.user, me.GetUser(), protocmp.Transform()); diff != "" {
				t.Errorf("profile changed (-want +got):\n%s", diff)
			}
			if got, want := me.GetPrivacy().GetMessagePrivacy(), parleyv1.MessagePrivacy_MESSAGE_PRIVACY_STRANGERS_LIMITED; got != want {
				t.Errorf("got privacy %v, want %v", got, want)
			}
			if _, err := login(c, "liz", liz.password); err != nil {
				t.Errorf("the password changed: %v", err)
			}
		})

		t.Run("Register, Login and Refresh need no token and ignore a bad one", func(t *testing.T) {
			for name, ctx := range map[string]context.Context{
				"without a token":   context.Background(),
				"with a bad token":  bearer("garbage"),
				"with a non-bearer": basicAuth(),
			} {
				username := "public_" + strings.ReplaceAll(strings.ReplaceAll(name, " ", "_"), "-", "_")
				if _, err := c.Register(ctx, &parleyv1.RegisterRequest{Username: username, Password: "long enough", DisplayName: "P"}); err != nil {
					t.Errorf("Register %s: %v", name, err)
				}
				res, err := c.Login(ctx, &parleyv1.LoginRequest{Username: username, Password: "long enough"})
				if err != nil {
					t.Fatalf("Login %s: %v", name, err)
				}
				if _, err := c.Refresh(ctx, &parleyv1.RefreshRequest{RefreshToken: res.GetTokens().GetRefreshToken()}); err != nil {
					t.Errorf("Refresh %s: %v", name, err)
				}
			}
		})
	})
}

func TestUpdateProfile(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		mike := e.signUp("mike", opts...)
		ctx := mike.ctx()

		profile := func(t *testing.T) *parleyv1.User {
			t.Helper()
			res, err := c.GetMe(ctx, &parleyv1.GetMeRequest{})
			if err != nil {
				t.Fatalf("GetMe: %v", err)
			}
			return res.GetUser()
		}
		update := func(t *testing.T, req *parleyv1.UpdateProfileRequest, wantName, wantBio string) {
			t.Helper()
			res, err := c.UpdateProfile(ctx, req)
			if err != nil {
				t.Fatalf("UpdateProfile: %v", err)
			}
			for _, u := range []*parleyv1.User{res.GetUser(), profile(t)} {
				if u.GetDisplayName() != wantName || u.GetBio() != wantBio {
					t.Errorf("got display name %q and bio %q, want %q and %q", u.GetDisplayName(), u.GetBio(), wantName, wantBio)
				}
			}
		}

		t.Run("absent fields are kept", func(t *testing.T) {
			update(t, &parleyv1.UpdateProfileRequest{Bio: proto.String("Hello there")}, "User mike", "Hello there")
			update(t, &parleyv1.UpdateProfileRequest{DisplayName: proto.String(" Mike ")}, "Mike", "Hello there")
			update(t, &parleyv1.UpdateProfileRequest{}, "Mike", "Hello there")
		})

		t.Run("an empty bio clears it", func(t *testing.T) {
			update(t, &parleyv1.UpdateProfileRequest{Bio: proto.String("")}, "Mike", "")
		})

		t.Run("a bio of 500 characters fits", func(t *testing.T) {
			bio := strings.Repeat("é", 500)
			update(t, &parleyv1.UpdateProfileRequest{Bio: proto.String(bio)}, "Mike", bio)
		})

		t.Run("bad input changes nothing", func(t *testing.T) {
			before := profile(t)
			for _, tt := range []struct {
				name  string
				req   *parleyv1.UpdateProfileRequest
				field string
			}{
				{"a blank display name", &parleyv1.UpdateProfileRequest{DisplayName: proto.String("   "), Bio: proto.String("changed")}, "display_name"},
				{"an empty display name", &parleyv1.UpdateProfileRequest{DisplayName: proto.String(""), Bio: proto.String("changed")}, "display_name"},
				{"a display name of 65 characters", &parleyv1.UpdateProfileRequest{DisplayName: proto.String(strings.Repeat("d", 65))}, "display_name"},
				{"a bio of 501 characters", &parleyv1.UpdateProfileRequest{DisplayName: proto.String("changed"), Bio: proto.String(strings.Repeat("b", 501))}, "bio"},
			} {
				t.Run(tt.name, func(t *testing.T) {
					_, err := c.UpdateProfile(ctx, tt.req)
					wantCode(t, err, connect.CodeInvalidArgument)
					if got := violatedFields(t, err); !slices.Contains(got, tt.field) {
						t.Errorf("got field violations %v, want one for %s", got, tt.field)
					}
					if diff := cmp.Diff(before, profile(t), protocmp.Transform()); diff != "" {
						t.Errorf("a failed UpdateProfile changed the profile (-want +got):\n%s", diff)
					}
				})
			}
		})
	})
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		nina := e.signUp("nina", opts...)
		other, err := login(c, "nina", nina.password)
		if err != nil {
			t.Fatal(err)
		}
		otherCtx := bearer(other.GetTokens().GetAccessToken())
		const newPassword = "a brand new password"
		hash := passwordHash(t, e, "nina")

		t.Run("a wrong current password changes nothing", func(t *testing.T) {
			_, err := c.ChangePassword(nina.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: "wrong password", NewPassword: newPassword})
			wantCode(t, err, connect.CodeUnauthenticated)
			if got := passwordHash(t, e, "nina"); got != hash {
				t.Errorf("the password hash changed")
			}
			if _, err := c.GetMe(otherCtx, &parleyv1.GetMeRequest{}); err != nil {
				t.Errorf("the other session was revoked: %v", err)
			}
		})

		t.Run("the new password must differ from the current one", func(t *testing.T) {
			_, err := c.ChangePassword(nina.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: nina.password, NewPassword: nina.password})
			wantCode(t, err, connect.CodeInvalidArgument)
		})

		t.Run("a new password of 7 characters is too short", func(t *testing.T) {
			_, err := c.ChangePassword(nina.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: nina.password, NewPassword: "1234567"})
			wantCode(t, err, connect.CodeInvalidArgument)
			if got := passwordHash(t, e, "nina"); got != hash {
				t.Errorf("the password hash changed")
			}
		})

		t.Run("success revokes the other sessions but not this one", func(t *testing.T) {
			if _, err := c.ChangePassword(nina.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: nina.password, NewPassword: newPassword}); err != nil {
				t.Fatalf("ChangePassword: %v", err)
			}
			if _, err := c.GetMe(nina.ctx(), &parleyv1.GetMeRequest{}); err != nil {
				t.Errorf("the current session stopped working: %v", err)
			}
			_, err := c.GetMe(otherCtx, &parleyv1.GetMeRequest{})
			wantCode(t, err, connect.CodeUnauthenticated)
			_, err = c.Refresh(context.Background(), &parleyv1.RefreshRequest{RefreshToken: other.GetTokens().GetRefreshToken()})
			wantCode(t, err, connect.CodeUnauthenticated)
			if _, err := c.Refresh(context.Background(), &parleyv1.RefreshRequest{RefreshToken: nina.tokens.GetRefreshToken()}); err != nil {
				t.Errorf("the current session cannot refresh: %v", err)
			}

			_, err = login(c, "nina", nina.password)
			wantCode(t, err, connect.CodeUnauthenticated)
			if _, err := login(c, "nina", newPassword); err != nil {
				t.Errorf("Login with the new password: %v", err)
			}
		})
	})
}

func TestGetUsers(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		oscar := e.signUp("oscar", opts...)
		peggy := e.register("peggy", "Peggy", opts...)
		quinn := e.register("quinn", "Quinn", opts...)

		t.Run("answers in the asked order, leaving out unknown ids and repeats", func(t *testing.T) {
			res, err := c.GetUsers(oscar.ctx(), &parleyv1.GetUsersRequest{UserIds: []string{
				quinn.GetId(), newUUID(), oscar.user.GetId(), quinn.GetId(), strings.ToUpper(peggy.GetId()),
			}})
			if err != nil {
				t.Fatalf("GetUsers: %v", err)
			}
			want := []*parleyv1.User{quinn, oscar.user, peggy}
			if diff := cmp.Diff(want, res.GetUsers(), protocmp.Transform()); diff != "" {
				t.Errorf("users differ (-want +got):\n%s", diff)
			}
		})

		t.Run("answers 100 unknown ids with nothing", func(t *testing.T) {
			ids := make([]string, 100)
			for i := range ids {
				ids[i] = newUUID()
			}
			res, err := c.GetUsers(oscar.ctx(), &parleyv1.GetUsersRequest{UserIds: ids})
			if err != nil {
				t.Fatalf("GetUsers: %v", err)
			}
			if got := len(res.GetUsers()); got != 0 {
				t.Errorf("got %d users, want 0", got)
			}
		})

		tooMany := make([]string, 101)
		for i := range tooMany {
			tooMany[i] = newUUID()
		}
		for _, tt := range []struct {
			name string
			ids  []string
		}{
			{"no ids are bad input", nil},
			{"101 ids are bad input", tooMany},
			{"an id that is no uuid is bad input", []string{peggy.GetId(), "peggy"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := c.GetUsers(oscar.ctx(), &parleyv1.GetUsersRequest{UserIds: tt.ids})
				wantCode(t, err, connect.CodeInvalidArgument)
			})
		}
	})
}

func TestSearchUsers(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		ctx := e.signUp("zed", opts...).ctx()
		for username, displayName := range map[string]string{
			"alice": "Alice Liddell",
			"alan":  "Alan Turing",
			"a_b":   "Underscore",
			"abby":  "Abby",
			"bob":   "Alfred Bob",
			"carol": "carol",
		} {
			e.register(username, displayName, opts...)
		}
		var pagers []string
		for i := range 7 {
			pagers = append(pagers, fmt.Sprintf("pg%d", i))
			e.register(pagers[i], "Pager", opts...)
		}

		search := func(t *testing.T, req *parleyv1.SearchUsersRequest) *parleyv1.SearchUsersResponse {
			t.Helper()
			res, err := c.SearchUsers(ctx, req)
			if err != nil {
				t.Fatalf("SearchUsers(%v): %v", req, err)
			}
			return res
		}

		for _, tt := range []struct {
			name  string
			query string
			want  []string
		}{
			{"a username or display name prefix matches", "al", []string{"alan", "alice", "bob"}},
			{"matching ignores case", "AL", []string{"alan", "alice", "bob"}},
			{"a display name prefix with a space matches", "alice l", []string{"alice"}},
			{"surrounding spaces are ignored", "  car ", []string{"carol"}},
			{"an underscore is literal", "a_", []string{"a_b"}},
			{"a percent sign is literal", "%", nil},
			{"a backslash is literal", `a\`, nil},
			{"nothing matches", "zz", nil},
			{"a whole username matches", "carol", []string{"carol"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := search(t, &parleyv1.SearchUsersRequest{Query: tt.query})
				if diff := cmp.Diff(tt.want, usernames(res.GetUsers())); diff != "" {
					t.Errorf("SearchUsers(%q) differs (-want +got):\n%s", tt.query, diff)
				}
				if res.GetNextPageToken() != "" {
					t.Errorf("got next page token %q for a short result, want none", res.GetNextPageToken())
				}
			})
		}

		t.Run("pages walk all matches once", func(t *testing.T) {
			var got []string
			token := ""
			for pages := 0; ; pages++ {
				if pages > len(pagers) {
					t.Fatalf("paging does not end; so far %v", got)
				}
				res := search(t, &parleyv1.SearchUsersRequest{Query: "pg", PageSize: 3, PageToken: token})
				if n := len(res.GetUsers()); n > 3 {
					t.Errorf("got %d users on a page of 3", n)
				}
				got = append(got, usernames(res.GetUsers())...)
				if token = res.GetNextPageToken(); token == "" {
					break
				}
			}
			if diff := cmp.Diff(pagers, got); diff != "" {
				t.Errorf("paged results differ (-want +got):\n%s", diff)
			}
		})

		t.Run("a page token from another query is bad input", func(t *testing.T) {
			first := search(t, &parleyv1.SearchUsersRequest{Query: "pg", PageSize: 1})
			if first.GetNextPageToken() == "" {
				t.Fatal("want a next page token for a one-user page")
			}
			_, err := c.SearchUsers(ctx, &parleyv1.SearchUsersRequest{Query: "p", PageToken: first.GetNextPageToken()})
			wantCode(t, err, connect.CodeInvalidArgument)
		})

		t.Run("a page size of 0 means 20", func(t *testing.T) {
			res := search(t, &parleyv1.SearchUsersRequest{Query: "pg"})
			if diff := cmp.Diff(pagers, usernames(res.GetUsers())); diff != "" {
				t.Errorf("results differ (-want +got):\n%s", diff)
			}
		})

		for _, tt := range []struct {
			name string
			req  *parleyv1.SearchUsersRequest
		}{
			{"a garbage page token is bad input", &parleyv1.SearchUsersRequest{Query: "pg", PageToken: "!!garbage!!"}},
			{"a foreign page token is bad input", &parleyv1.SearchUsersRequest{Query: "pg", PageToken: base64.RawURLEncoding.EncodeToString([]byte("x:pg1"))}},
			{"a page size of 51 is bad input", &parleyv1.SearchUsersRequest{Query: "pg", PageSize: 51}},
			{"a negative page size is bad input", &parleyv1.SearchUsersRequest{Query: "pg", PageSize: -1}},
			{"an empty query is bad input", &parleyv1.SearchUsersRequest{}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := c.SearchUsers(ctx, tt.req)
				wantCode(t, err, connect.CodeInvalidArgument)
			})
		}
	})
}

func TestUpdatePrivacy(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.auth(opts...)
		ctx := e.signUp("rita", opts...).ctx()
		privacy := func(t *testing.T) parleyv1.MessagePrivacy {
			t.Helper()
			res, err := c.GetMe(ctx, &parleyv1.GetMeRequest{})
			if err != nil {
				t.Fatalf("GetMe: %v", err)
			}
			return res.GetPrivacy().GetMessagePrivacy()
		}

		if got, want := privacy(t), parleyv1.MessagePrivacy_MESSAGE_PRIVACY_STRANGERS_LIMITED; got != want {
			t.Errorf("got default privacy %v, want %v", got, want)
		}
		for _, p := range []parleyv1.MessagePrivacy{
			parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY,
			parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE,
		} {
			res, err := c.UpdatePrivacy(ctx, &parleyv1.UpdatePrivacyRequest{MessagePrivacy: p})
			if err != nil {
				t.Fatalf("UpdatePrivacy(%v): %v", p, err)
			}
			if got := res.GetPrivacy().GetMessagePrivacy(); got != p {
				t.Errorf("UpdatePrivacy answered %v, want %v", got, p)
			}
			if got := privacy(t); got != p {
				t.Errorf("GetMe says %v after UpdatePrivacy(%v)", got, p)
			}
		}
		for _, p := range []parleyv1.MessagePrivacy{parleyv1.MessagePrivacy_MESSAGE_PRIVACY_UNSPECIFIED, 4, 99, -1} {
			_, err := c.UpdatePrivacy(ctx, &parleyv1.UpdatePrivacyRequest{MessagePrivacy: p})
			wantCode(t, err, connect.CodeInvalidArgument)
		}
		if got, want := privacy(t), parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE; got != want {
			t.Errorf("got privacy %v after rejected updates, want %v", got, want)
		}
	})
}

func TestRequestsOverTheSizeLimitAreRefusedBeforeAnythingElse(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, func(c *server.Config) { c.MaxRequestBytes = 1024 })
		c := e.auth(opts...)
		sam := e.signUp("sam", opts...)
		huge := strings.Repeat("x", 4096)

		// The password is also too long for validation (InvalidArgument) and
		// wrong (Unauthenticated): the size limit must come first.
		_, err := login(c, "sam", huge)
		wantCode(t, err, connect.CodeResourceExhausted)
		_, err = c.Register(context.Background(), &parleyv1.RegisterRequest{Username: "big", Password: huge, DisplayName: "Big"})
		wantCode(t, err, connect.CodeResourceExhausted)
		_, err = c.UpdateProfile(sam.ctx(), &parleyv1.UpdateProfileRequest{Bio: proto.String(huge)})
		wantCode(t, err, connect.CodeResourceExhausted)
		if got := e.count("users"); got != 1 {
			t.Errorf("got %d users, want 1", got)
		}
		if got := e.count("sessions"); got != 1 {
			t.Errorf("got %d sessions, want 1", got)
		}
	})
}

// login logs in as a CLI device.
func login(c parleyv1connect.AuthServiceClient, username, password string) (*parleyv1.LoginResponse, error) {
	return c.Login(context.Background(), &parleyv1.LoginRequest{
		Username: username, Password: password, DeviceName: "test", Platform: parleyv1.Platform_PLATFORM_CLI,
	})
}

// passwordHash reads the stored password hash of a user.
func passwordHash(t testing.TB, e *env, username string) string {
	t.Helper()
	var hash string
	if err := e.db.Pool().QueryRow(context.Background(), "SELECT password_hash FROM users WHERE username = $1", username).Scan(&hash); err != nil {
		t.Fatalf("read password hash of %s: %v", username, err)
	}
	return hash
}

func errorMessage(err error) string {
	if cerr := new(connect.Error); errors.As(err, &cerr) {
		return cerr.Message()
	}
	return ""
}

// details returns the decoded error details of err.
func details(t testing.TB, err error) []proto.Message {
	t.Helper()
	cerr := new(connect.Error)
	if !errors.As(err, &cerr) {
		t.Fatalf("got error %v, want a *connect.Error", err)
	}
	var out []proto.Message
	for _, d := range cerr.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatalf("decode error detail %s: %v", d.Type(), err)
		}
		out = append(out, v)
	}
	return out
}

// violatedFields returns the fields named by err's details: protovalidate's
// buf.validate.Violations, from protovalidate and from the handlers alike.
func violatedFields(t testing.TB, err error) []string {
	t.Helper()
	var fields []string
	for _, d := range details(t, err) {
		switch v := d.(type) {
		case *validate.Violations:
			for _, viol := range v.GetViolations() {
				if elems := viol.GetField().GetElements(); len(elems) > 0 {
					fields = append(fields, elems[0].GetFieldName())
				}
			}
		}
	}
	if len(fields) == 0 {
		t.Errorf("error %v names no field in its details", err)
	}
	return fields
}

// retryDelay returns the delay of err's google.rpc.RetryInfo detail.
func retryDelay(t testing.TB, err error) time.Duration {
	t.Helper()
	for _, d := range details(t, err) {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatalf("error %v carries no google.rpc.RetryInfo", err)
	return 0
}

func usernames(users []*parleyv1.User) []string {
	var out []string
	for _, u := range users {
		out = append(out, u.GetUsername())
	}
	return out
}

func sign(t testing.TB, method jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return s
}

// basicAuth is a context that sends credentials of another scheme than Bearer.
func basicAuth() context.Context {
	ctx, info := connect.NewClientContext(context.Background())
	info.RequestHeader().Set("Authorization", "Basic dXNlcjpwYXNz")
	return ctx
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomToken() string { return base64.RawURLEncoding.EncodeToString(randomBytes(32)) }

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
