package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// loginThrottle decides which login attempts may reach the password hasher.
// The README's "Login throttling" tells the design; in short:
//
//   - Only failures count. Every attempt takes one unit of each budget it is
//     subject to before its password is checked (so that concurrent guesses
//     cannot overdraw a budget), and a correct password gives them back.
//   - A tight budget per account and address (or per account and known
//     device) slows a guesser at one place without touching anyone else.
//   - A broad budget per address stops one address from spraying guesses
//     over many accounts. IPv6 addresses count per /64, the block one
//     subscriber gets.
//   - An account-wide budget bounds the guesses at one account from everywhere
//     together. A client that proves it is a known device of the account (a
//     device token from an earlier successful login), or that calls from an
//     address where the account has an active session, is not subject to it
//     nor to the per-address budget: an attacker who spends them cannot lock
//     the owner out.
//
// A known device is subject to its own per-device budget only: a guesser
// without the token cannot touch it, and one who stole it gets the tight
// rate at that one account.
type loginThrottle struct {
	pair    *keyedLimiter // failures per account and address, or account and device
	address *keyedLimiter // failures per address, across accounts
	account failureBudget // failures per account from unknown places
}

// failureBudget is a token bucket per key whose units can be given back.
type failureBudget interface {
	// take spends one unit of key's budget. When none is left it spends
	// nothing and returns false and how long until a unit is back.
	take(ctx context.Context, key string, now time.Time) (bool, time.Duration)
	// refund gives back a unit take spent.
	refund(ctx context.Context, key string, now time.Time)
}

func newLoginThrottle(cfg Config, redis rueidis.Client, logger *slog.Logger) *loginThrottle {
	t := &loginThrottle{
		pair:    newKeyedLimiter(cfg.LoginPerSource, 100_000),
		address: newKeyedLimiter(cfg.LoginPerAddress, 100_000),
	}
	local := localBudget{newKeyedLimiter(cfg.LoginPerAccount, 100_000)}
	if redis != nil && cfg.LoginPerAccount.Burst > 0 {
		t.account = &redisBudget{
			client: redis, prefix: cfg.RedisChannel + ":login-failures:", rate: cfg.LoginPerAccount,
			fallback: local, logger: logger.With("component", "login-throttle"),
		}
	} else {
		t.account = local
	}
	return t
}

// loginAttempt is what the throttle knows of one attempt before the password
// is checked.
type loginAttempt struct {
	account string // the username, lower case: unknown usernames count too
	address string
	// device identifies the account's known device the client proved to be;
	// empty for an unknown client.
	device string
	// knownAddress reports whether the account has an active session opened
	// from address; asked only when the account-wide budget is spent.
	knownAddress func(context.Context) (bool, error)
}

// spent is the budget an admitted attempt took: given back if it succeeds.
type spent struct {
	t       *loginThrottle
	pair    string
	address string
	account string
}

// admit takes the attempt's budgets, or refuses it with ResourceExhausted.
func (t *loginThrottle) admit(ctx context.Context, a loginAttempt, now time.Time) (*spent, error) {
	s := &spent{t: t}
	if a.device != "" {
		s.pair = a.account + "\x00device\x00" + a.device
		if ok, wait := t.pair.allow(s.pair, now); !ok {
			return nil, resourceExhausted("too many failed logins for this account from this device; try again later", wait)
		}
		return s, nil
	}
	addr := addressKey(a.address)
	pair := a.account + "\x00address\x00" + addr
	if ok, wait := t.pair.allow(pair, now); !ok {
		return nil, resourceExhausted("too many failed logins for this account from this address; try again later", wait)
	}
	s.pair = pair
	// The broad budgets. An address where the account has an active session
	// is the owner's: failures of others, there or elsewhere, do not stop
	// logins from it, which the per-source budget still bounds. Whether it
	// is one is asked only when a broad budget is spent.
	msg, wait := "", time.Duration(0)
	if ok, w := t.address.allow(addr, now); ok {
		s.address = addr
	} else {
		msg, wait = "too many failed logins from this address; try again later", w
	}
	if msg == "" {
		if ok, w := t.account.take(ctx, a.account, now); ok {
			s.account = a.account
		} else {
			msg, wait = "too many failed logins for this account; sign in from a device or network you used before, or try again later", w
		}
	}
	if msg == "" {
		return s, nil
	}
	known, err := a.knownAddress(ctx)
	if err != nil || !known {
		s.refund(ctx, now)
	}
	switch {
	case err != nil:
		return nil, err
	case !known:
		return nil, resourceExhausted(msg, wait)
	}
	return s, nil
}

// admitSession takes the budget of a password check in an authenticated
// session (ChangePassword), or refuses it with ResourceExhausted.
func (t *loginThrottle) admitSession(sessionID string, now time.Time) (*spent, error) {
	s := &spent{t: t, pair: "\x00session\x00" + sessionID}
	if ok, wait := t.pair.allow(s.pair, now); !ok {
		return nil, resourceExhausted("too many wrong passwords in this session; try again later", wait)
	}
	return s, nil
}

// refund gives back what the attempt took: a correct password is no
// guess, and must not count against anyone.
func (s *spent) refund(ctx context.Context, now time.Time) {
	if s.pair != "" {
		s.t.pair.refund(s.pair, now)
	}
	if s.address != "" {
		s.t.address.refund(s.address, now)
	}
	if s.account != "" {
		s.t.account.refund(ctx, s.account, now)
	}
}

// addressKey is the unit a per-address budget counts: the address for IPv4,
// its /64 for IPv6, which one subscriber gets whole.
func addressKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Is4() || ip.Is4In6() {
		return addr
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return addr
	}
	return p.String()
}

// localBudget is a failureBudget in this node's memory.
type localBudget struct{ l *keyedLimiter }

func (b localBudget) take(_ context.Context, key string, now time.Time) (bool, time.Duration) {
	return b.l.allow(key, now)
}

func (b localBudget) refund(_ context.Context, key string, now time.Time) { b.l.refund(key, now) }

// redisBudget is a failureBudget every node shares through Redis: a token
// bucket per key in a hash, changed by a script so that concurrent nodes
// cannot overdraw it. It keeps the time of Redis, not of the nodes. When
// Redis fails it falls back to this node's memory rather than refuse logins
// or stop counting.
type redisBudget struct {
	client   rueidis.Client
	prefix   string
	rate     Rate
	fallback localBudget
	logger   *slog.Logger

	mu     sync.Mutex
	warned time.Time // when a Redis failure was last logged
}

// budgetScript takes (ARGV[3] = "take") or gives back (ARGV[3] = "refund")
// one unit of the bucket KEYS[1] of ARGV[1] units refilled one per ARGV[2]
// milliseconds. It returns 0 when a unit was taken or given back, else the
// milliseconds until a unit is back. The key expires once the bucket is full
// again, when it says nothing a missing key does not.
var budgetScript = rueidis.NewLuaScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local b = redis.call("HMGET", KEYS[1], "tokens", "at")
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) / interval) end
local wait = 0
if ARGV[3] == "take" then
  if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * interval) end
else
  tokens = math.min(burst, tokens + 1)
end
if tokens >= burst then
  redis.call("DEL", KEYS[1])
else
  redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "at", tostring(now))
  redis.call("PEXPIRE", KEYS[1], math.ceil((burst - tokens) * interval))
end
return wait
`)

func (b *redisBudget) run(ctx context.Context, key, op string) (int64, error) {
	interval := max(b.rate.interval().Milliseconds(), 1)
	return budgetScript.Exec(ctx, b.client, []string{b.prefix + key},
		[]string{strconv.Itoa(b.rate.Burst), strconv.FormatInt(interval, 10), op}).AsInt64()
}

func (b *redisBudget) take(ctx context.Context, key string, now time.Time) (bool, time.Duration) {
	wait, err := b.run(ctx, key, "take")
	if err != nil {
		b.warn(err, now)
		return b.fallback.take(ctx, key, now)
	}
	return wait == 0, time.Duration(wait) * time.Millisecond
}

func (b *redisBudget) refund(ctx context.Context, key string, now time.Time) {
	// The refund must land even when the client has gone: its attempt
	// succeeded and was no guess.
	if _, err := b.run(context.WithoutCancel(ctx), key, "refund"); err != nil {
		b.warn(err, now)
		b.fallback.refund(ctx, key, now)
	}
}

// warn logs a Redis failure at most once a minute: a Redis outage would
// otherwise log every login attempt.
func (b *redisBudget) warn(err error, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.warned) < time.Minute {
		return
	}
	b.warned = now
	b.logger.Warn("login failure budget: Redis failed; counting on this node only", "error", fmt.Errorf("run budget script: %w", err))
}
