package server_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

// authFrom returns an AuthService client whose connections come from the
// local address ip (any of 127.0.0.0/8 on Linux), so that the server sees a
// client address of its own for it, as it would a remote host's.
func (e *env) authFrom(t testing.TB, ip string, opts ...connect.ClientOption) parleyv1connect.AuthServiceClient {
	t.Helper()
	tr := e.client.Transport.(*http.Transport).Clone()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr.DialContext = dialer.DialContext
	t.Cleanup(tr.CloseIdleConnections)
	return parleyv1connect.NewAuthServiceClient(&http.Client{Transport: tr}, e.srv.URL, opts...)
}

// loginWith logs in presenting deviceToken (empty: a new device).
func loginWith(c parleyv1connect.AuthServiceClient, username, password, deviceToken string) (*parleyv1.LoginResponse, error) {
	return c.Login(context.Background(), &parleyv1.LoginRequest{
		Username: username, Password: password, DeviceName: "test", Platform: parleyv1.Platform_PLATFORM_CLI, DeviceToken: deviceToken,
	})
}

var passwordChecksRE = regexp.MustCompile(`(?m)^parley_password_checks_total\{result="(match|mismatch)"\} (\d+)$`)

// passwordChecks reads from /metrics how many passwords the server checked
// against a hash, by result: what a guesser gets.
func passwordChecks(t testing.TB, e *env) (match, mismatch int) {
	t.Helper()
	code, body := e.in(t).get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, m := range passwordChecksRE.FindAllStringSubmatch(body, -1) {
		n, _ := strconv.Atoi(m[2])
		if m[1] == "match" {
			match = n
		} else {
			mismatch = n
		}
	}
	return match, mismatch
}

// TestLoginUnderAttack is issue 13's finding 4: 1,000 wrong passwords from 50
// addresses must not lock the owner out, and must not buy the attacker more
// than the account-wide budget of guesses.
func TestLoginUnderAttack(t *testing.T) {
	t.Parallel()
	perAccount := server.Rate{Burst: 20, Per: time.Hour}
	e := newEnv(t, func(c *server.Config) {
		c.LoginPerSource = server.Rate{Burst: 5, Per: 10 * time.Minute}
		c.LoginPerAddress = server.Rate{Burst: 100, Per: 10 * time.Minute}
		c.LoginPerAccount = perAccount
	})
	e.register("victim", "Victim")
	password := passwordOf("victim")

	// The owner signed in at home once: that device holds a device token,
	// and the account has a session opened from home.
	const home, cafe, elsewhere = "127.0.0.2", "127.0.0.3", "127.0.0.4"
	first, err := loginWith(e.authFrom(t, home), "victim", password, "")
	if err != nil {
		t.Fatalf("Login at home: %v", err)
	}
	device := first.GetDeviceToken()
	if device == "" {
		t.Fatal("Login returned no device token")
	}

	start := time.Now()
	const addresses, perAddress = 50, 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		codes   = map[connect.Code]int{}
		unknown []error
	)
	for i := range addresses {
		c := e.authFrom(t, fmt.Sprintf("127.0.1.%d", i+1))
		wg.Go(func() {
			for j := range perAddress {
				_, err := loginWith(c, "victim", fmt.Sprintf("guess %d-%d", i, j), "")
				mu.Lock()
				switch code := connect.CodeOf(err); code {
				case connect.CodeUnauthenticated, connect.CodeResourceExhausted:
					codes[code]++
				default:
					unknown = append(unknown, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(unknown) > 0 {
		t.Fatalf("%d attempts neither refused nor throttled, such as: %v", len(unknown), unknown[0])
	}
	match, mismatch := passwordChecks(t, e)
	// In an hour the account-wide budget allows its burst and refills by
	// as much again; in the time the attack took, by elapsed/interval.
	bound := perAccount.Burst + int(elapsed/(perAccount.Per/time.Duration(perAccount.Burst))) + 1
	t.Logf("%d attempts from %d addresses in %v: %d wrong passwords checked, %d throttled (bound %d; %d per hour)",
		addresses*perAddress, addresses, elapsed.Round(time.Millisecond), codes[connect.CodeUnauthenticated], codes[connect.CodeResourceExhausted], bound, 2*perAccount.Burst)
	if mismatch > bound || codes[connect.CodeUnauthenticated] != mismatch {
		t.Errorf("the server checked %d wrong passwords (%d answered Unauthenticated), want at most %d", mismatch, codes[connect.CodeUnauthenticated], bound)
	}
	if match != 1 {
		t.Errorf("got %d matching password checks, want 1 (the owner's first login)", match)
	}

	t.Run("a known device signs in from a new address", func(t *testing.T) {
		res, err := loginWith(e.authFrom(t, cafe), "victim", password, device)
		if err != nil {
			t.Fatalf("Login with the device token: %v", err)
		}
		if res.GetDeviceToken() == "" {
			t.Error("Login returned no renewed device token")
		}
	})
	t.Run("a new device signs in where the account has a session", func(t *testing.T) {
		if _, err := loginWith(e.authFrom(t, home), "victim", password, ""); err != nil {
			t.Fatalf("Login from home without a device token: %v", err)
		}
	})
	t.Run("a new device at a new address waits, as the attacker does", func(t *testing.T) {
		// Not guaranteed: it is indistinguishable from the attack.
		_, err := loginWith(e.authFrom(t, elsewhere), "victim", password, "")
		wantCode(t, err, connect.CodeResourceExhausted)
		if d := retryDelay(t, err); d <= 0 {
			t.Errorf("got retry delay %v, want a positive one", d)
		}
	})
	t.Run("another account's device token does not help", func(t *testing.T) {
		e.register("bystander", "Bystander")
		other, err := loginWith(e.authFrom(t, elsewhere), "bystander", passwordOf("bystander"), "")
		if err != nil {
			t.Fatalf("Login of another account: %v", err)
		}
		_, err = loginWith(e.authFrom(t, elsewhere), "victim", password, other.GetDeviceToken())
		wantCode(t, err, connect.CodeResourceExhausted)
	})
}

func TestLoginThrottlesEachSource(t *testing.T) {
	t.Parallel()
	source := server.Rate{Burst: 3, Per: time.Hour}
	e := newEnv(t, func(c *server.Config) { c.LoginPerSource = source })
	e.register("target", "Target")
	password := passwordOf("target")
	owner, err := loginWith(e.authFrom(t, "127.0.0.5"), "target", password, "")
	if err != nil {
		t.Fatal(err)
	}
	device := owner.GetDeviceToken()

	t.Run("one address gets a few guesses at one account", func(t *testing.T) {
		c := e.authFrom(t, "127.0.2.1")
		for range source.Burst {
			_, err := loginWith(c, "target", "a wrong guess", "")
			wantCode(t, err, connect.CodeUnauthenticated)
		}
		_, err := loginWith(c, "target", password, "")
		wantCode(t, err, connect.CodeResourceExhausted)
		// The same address may still sign in to other accounts.
		e.register("neighbour", "Neighbour")
		if _, err := loginWith(c, "neighbour", passwordOf("neighbour"), ""); err != nil {
			t.Errorf("another account from the same address: %v", err)
		}
	})
	t.Run("a stolen device token gets a few guesses too", func(t *testing.T) {
		c := e.authFrom(t, "127.0.2.2")
		for range source.Burst {
			_, err := loginWith(c, "target", "a wrong guess", device)
			wantCode(t, err, connect.CodeUnauthenticated)
		}
		_, err := loginWith(e.authFrom(t, "127.0.2.3"), "target", "another guess", device)
		wantCode(t, err, connect.CodeResourceExhausted)
	})
	t.Run("unknown usernames are throttled alike", func(t *testing.T) {
		// Or the throttle would tell which usernames exist.
		c := e.authFrom(t, "127.0.2.4")
		for range source.Burst {
			_, err := loginWith(c, "nobody_here", "a wrong guess", "")
			wantCode(t, err, connect.CodeUnauthenticated)
		}
		_, err := loginWith(c, "nobody_here", "a wrong guess", "")
		wantCode(t, err, connect.CodeResourceExhausted)
	})
}

// TestLoginBehindOneAddress is the NAT case: many people signing in correctly
// from one address are not refused, however many they are; failures there
// spend the address's budget, but not for accounts with a session there or
// for known devices.
func TestLoginBehindOneAddress(t *testing.T) {
	t.Parallel()
	limit := server.Rate{Burst: 3, Per: time.Hour}
	e := newEnv(t, func(c *server.Config) {
		c.LoginPerSource, c.LoginPerAddress, c.LoginPerAccount = limit, limit, limit
	})
	const nat = "127.0.3.1"
	c := e.authFrom(t, nat)
	names := []string{"office_a", "office_b", "office_c", "office_d", "office_e"}
	devices := map[string]string{}
	for _, n := range names {
		e.register(n, n)
	}
	for round := range 4 {
		for _, n := range names {
			res, err := loginWith(c, n, passwordOf(n), "")
			if err != nil {
				t.Fatalf("round %d: Login(%s) from the shared address: %v", round, n, err)
			}
			devices[n] = res.GetDeviceToken()
		}
	}

	// A guesser behind the same address spends its budget on other accounts.
	e.register("newcomer", "Newcomer")
	for i := range limit.Burst {
		_, err := loginWith(c, fmt.Sprintf("stranger%d", i), "a wrong guess", "")
		wantCode(t, err, connect.CodeUnauthenticated)
	}
	_, err := loginWith(c, "newcomer", passwordOf("newcomer"), "")
	wantCode(t, err, connect.CodeResourceExhausted)
	for _, n := range names {
		if _, err := loginWith(c, n, passwordOf(n), devices[n]); err != nil {
			t.Errorf("Login(%s) with its device token: %v", n, err)
		}
		if _, err := loginWith(c, n, passwordOf(n), ""); err != nil {
			t.Errorf("Login(%s) from where it has sessions: %v", n, err)
		}
	}
}

func TestChangePasswordThrottlesWrongCurrentPasswords(t *testing.T) {
	t.Parallel()
	source := server.Rate{Burst: 3, Per: time.Hour}
	e := newEnv(t, func(c *server.Config) { c.LoginPerSource = source })
	olga := e.signUp("olga")
	c := e.auth()
	for range source.Burst {
		_, err := c.ChangePassword(olga.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: "a wrong guess", NewPassword: "velvet orbit 42 tundra"})
		wantCode(t, err, connect.CodeUnauthenticated)
	}
	_, err := c.ChangePassword(olga.ctx(), &parleyv1.ChangePasswordRequest{CurrentPassword: olga.password, NewPassword: "velvet orbit 42 tundra"})
	wantCode(t, err, connect.CodeResourceExhausted)
	// A guesser in one session does not stop the owner's Login.
	if _, err := login(c, "olga", olga.password); err != nil {
		t.Errorf("Login after another session's wrong guesses: %v", err)
	}
}

// TestNodesShareTheAccountLoginBudget: with Redis, failed logins at one
// account count on every node together, so adding nodes adds no guesses.
func TestNodesShareTheAccountLoginBudget(t *testing.T) {
	t.Parallel()
	perAccount := server.Rate{Burst: 4, Per: time.Hour}
	redis, channel := redisURL(t), testChannel()
	cfg := func(c *server.Config) {
		c.RedisURL, c.RedisChannel = redis, channel
		c.LoginPerAccount = perAccount
	}
	n1 := newEnv(t, cfg)
	n2 := newEnvOn(t, n1.db, cfg)
	n1.register("shared", "Shared")
	password := passwordOf("shared")

	// A correct password costs nothing, on either node.
	for _, n := range []*env{n1, n2} {
		if _, err := loginWith(n.authFrom(t, "127.0.4.9"), "shared", password, ""); err != nil {
			t.Fatal(err)
		}
	}
	for i := range perAccount.Burst {
		n := []*env{n1, n2}[i%2]
		_, err := loginWith(n.authFrom(t, fmt.Sprintf("127.0.4.%d", i+1)), "shared", "a wrong guess", "")
		wantCode(t, err, connect.CodeUnauthenticated)
	}
	for i, n := range []*env{n1, n2} {
		_, err := loginWith(n.authFrom(t, fmt.Sprintf("127.0.4.%d", 100+i)), "shared", password, "")
		wantCode(t, err, connect.CodeResourceExhausted)
	}
}
