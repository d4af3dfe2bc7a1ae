package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"

	"github.com/parley-chat/parley/db"
)

// caller is the authenticated user and session of a request.
type caller struct {
	UserID    string
	SessionID string
}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := authn.GetInfo(ctx).(caller)
	return c, ok
}

// mustCaller returns the caller of an authenticated procedure. The middleware
// guarantees one for every procedure not on the public list, so a missing
// caller is a wiring bug, reported as an internal error.
func mustCaller(ctx context.Context) (caller, error) {
	c, ok := callerFrom(ctx)
	if !ok {
		return caller{}, errors.New("no authenticated caller on a protected procedure")
	}
	return c, nil
}

const (
	tokenIssuer       = "parley"
	signingSecretName = "access_token_hmac_sha256"
	refreshTokenBytes = 32
)

// accessClaims are the claims of an access token: the user (sub) and session (sid).
type accessClaims struct {
	SessionID string `json:"sid"`
	jwt.RegisteredClaims
}

// tokens issues and verifies access tokens (HS256 JWTs with a key every node
// reads from the database) and knows which sessions are still active.
type tokens struct {
	key       []byte
	accessTTL time.Duration
	parser    *jwt.Parser
	verified  verifiedTokens
	sessions  *sessionCache
	devices   *deviceTokens
}

func loadTokens(ctx context.Context, d *db.DB, accessTTL, cacheTTL time.Duration) (*tokens, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	// The first node to start creates the key; every later one reads it.
	if err := d.InsertServerSecret(ctx, db.InsertServerSecretParams{Name: signingSecretName, Secret: secret}); err != nil {
		return nil, fmt.Errorf("store signing key: %w", err)
	}
	key, err := d.GetServerSecret(ctx, signingSecretName)
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	return newTokens(key, accessTTL, newSessionCache(d, cacheTTL)), nil
}

// newTokens returns the tokens signed and checked with key.
func newTokens(key []byte, accessTTL time.Duration, sessions *sessionCache) *tokens {
	return &tokens{
		key:       key,
		accessTTL: accessTTL,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithIssuer(tokenIssuer),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(tokenLeeway),
			// Unused bits in a segment's last character must be zero, so
			// that a token has one spelling (RFC 4648 §3.5).
			jwt.WithStrictDecoding(),
		),
		sessions: sessions,
		devices:  newDeviceTokens(key),
	}
}

// issueAccess signs an access token for the session.
func (t *tokens) issueAccess(userID, sessionID string, now time.Time) (string, time.Time, error) {
	exp := now.Add(t.accessTTL)
	claims := accessClaims{
		SessionID: sessionID,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:  tokenIssuer,
			Subject: userID,
			// A random id makes every token distinct, even two issued in one second.
			ID:        randomToken()[:22],
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign access token: %w", err)
	}
	return signed, exp, nil
}

// authenticate is the authn.AuthFunc: it admits public procedures without a
// token and every other request only with a valid access token of an active
// session.
func (t *tokens) authenticate(public map[string]bool) authn.AuthFunc {
	return func(ctx context.Context, r *http.Request) (any, error) {
		if procedure, ok := authn.InferProcedure(r.URL); ok && public[procedure] {
			return nil, nil
		}
		raw, ok := authn.BearerToken(r)
		if !ok {
			return nil, connect.NewError(connect.CodeUnauthenticated, errTokenMissing)
		}
		c, err := t.verify(raw, time.Now())
		if err != nil {
			return nil, connect.NewError(connect.CodeUnauthenticated, err)
		}
		active, err := t.sessions.active(ctx, c.SessionID)
		if err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, errors.New("cannot check the session right now; retry"))
		}
		if !active {
			return nil, connect.NewError(connect.CodeUnauthenticated, errSessionRevoked)
		}
		return c, nil
	}
}

// tokenLeeway is the clock skew between nodes that token checks allow.
const tokenLeeway = 5 * time.Second

// verify checks an access token's signature and claims. A client sends the
// same token with every request for its lifetime, and checking it (base64,
// JSON, HMAC) costs more than the rest of authentication, so verified tokens
// are remembered until they expire.
func (t *tokens) verify(raw string, now time.Time) (caller, error) {
	if v, ok := t.verified.get(raw); ok {
		if now.After(v.expires.Add(tokenLeeway)) {
			return caller{}, errTokenExpired
		}
		return v.caller, nil
	}
	// Base64 decoders skip line breaks, even strict ones: anything outside
	// the compact serialization's alphabet would be another spelling.
	if !compactJWS(raw) {
		return caller{}, errTokenInvalid
	}
	var claims accessClaims
	if _, err := t.parser.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return t.key, nil }); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return caller{}, errTokenExpired
		}
		return caller{}, errTokenInvalid
	}
	if claims.Subject == "" || claims.SessionID == "" {
		return caller{}, errTokenInvalid
	}
	c := caller{UserID: claims.Subject, SessionID: claims.SessionID}
	t.verified.put(raw, verifiedToken{caller: c, expires: claims.ExpiresAt.Time}, now)
	return c, nil
}

// compactJWS reports whether s is made of base64url characters and dots
// only, as every token issueAccess signs is.
func compactJWS(s string) bool {
	for i := range len(s) {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// verifiedToken is what a checked access token says.
type verifiedToken struct {
	caller  caller
	expires time.Time
}

// verifiedTokens maps access tokens this node has checked to their claims.
type verifiedTokens struct {
	mu sync.Mutex
	m  map[string]verifiedToken
}

// maxVerifiedTokens bounds the cache at a few tens of megabytes.
const maxVerifiedTokens = 100_000

func (v *verifiedTokens) get(raw string) (verifiedToken, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	t, ok := v.m[raw]
	return t, ok
}

func (v *verifiedTokens) put(raw string, t verifiedToken, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[string]verifiedToken)
	}
	if len(v.m) >= maxVerifiedTokens {
		for k, old := range v.m {
			if now.After(old.expires.Add(tokenLeeway)) {
				delete(v.m, k)
			}
		}
		if len(v.m) >= maxVerifiedTokens {
			clear(v.m)
		}
	}
	v.m[raw] = t
}

// sessionCache remembers for a short time that a session is active, so that
// checking every request against the database costs one query per session per
// TTL. Revocations on this node take effect at once (forget); on other nodes
// within the TTL.
type sessionCache struct {
	db  *db.DB
	ttl time.Duration

	mu      sync.Mutex
	entries map[string]time.Time // session id → checked-active-until
	// forgotten holds sessions revoked on this node in the last TTL, so that
	// a check that read the session just before its revocation committed
	// does not cache it as active again.
	forgotten map[string]time.Time
	// lookups shares one database read among the requests that find a
	// session's entry expired at the same moment: a busy client's requests
	// all do.
	lookups singleflight.Group
}

// sessionLookupTimeout bounds a shared session read, which outlives the
// request that started it so that the others waiting on it are not failed
// by that one request's cancellation.
const sessionLookupTimeout = 5 * time.Second

const maxCachedSessions = 100_000

func newSessionCache(d *db.DB, ttl time.Duration) *sessionCache {
	return &sessionCache{db: d, ttl: ttl, entries: make(map[string]time.Time), forgotten: make(map[string]time.Time)}
}

func (c *sessionCache) active(ctx context.Context, sessionID string) (bool, error) {
	now := time.Now()
	c.mu.Lock()
	until, ok := c.entries[sessionID]
	c.mu.Unlock()
	if ok && now.Before(until) {
		return true, nil
	}
	v, err, _ := c.lookups.Do(sessionID, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sessionLookupTimeout)
		defer cancel()
		return c.lookup(ctx, sessionID)
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// lookup reads a session from the database and caches it when active.
func (c *sessionCache) lookup(ctx context.Context, sessionID string) (bool, error) {
	now := time.Now()
	s, err := c.db.GetSession(ctx, sessionID)
	if db.IsNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up session: %w", err)
	}
	if s.RevokedAt != nil || !now.Before(s.RefreshExpiresAt) {
		c.forget(sessionID)
		return false, nil
	}
	c.mu.Lock()
	if at, ok := c.forgotten[sessionID]; ok && !at.Before(now) {
		c.mu.Unlock()
		return true, nil // active when read, but revoked since: do not cache
	}
	if len(c.entries) >= maxCachedSessions {
		for id, u := range c.entries {
			if !now.Before(u) {
				delete(c.entries, id)
			}
		}
		if len(c.entries) >= maxCachedSessions {
			clear(c.entries)
		}
	}
	c.entries[sessionID] = now.Add(c.ttl)
	c.mu.Unlock()
	return true, nil
}

func (c *sessionCache) forget(sessionIDs ...string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, at := range c.forgotten {
		if now.Sub(at) > c.ttl {
			delete(c.forgotten, id)
		}
	}
	for _, id := range sessionIDs {
		delete(c.entries, id)
		c.forgotten[id] = now
	}
}

// randomToken returns 256 random bits, base64url-encoded.
func randomToken() string {
	b := make([]byte, refreshTokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is how refresh tokens are stored: a stolen table yields no token.
// The tokens carry 256 random bits, so a fast hash is enough.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}
