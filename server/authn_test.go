package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/db/dbtest"
)

// A remembered token is still checked for expiry, and a token that fails
// verification is never remembered.
func TestVerifiedTokensExpireAndBadOnesAreNotRemembered(t *testing.T) {
	t.Parallel()
	tk, err := loadTokens(context.Background(), dbtest.New(t), time.Minute, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	raw, exp, err := tk.issueAccess("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{now, now.Add(time.Second)} { // the second check is a cache hit
		c, err := tk.verify(raw, at)
		if err != nil {
			t.Fatalf("verify at %v: %v", at.Sub(now), err)
		}
		if c.UserID != "11111111-1111-1111-1111-111111111111" || c.SessionID != "22222222-2222-2222-2222-222222222222" {
			t.Fatalf("got caller %+v", c)
		}
	}
	if _, ok := tk.verified.get(raw); !ok {
		t.Fatal("a verified token was not remembered")
	}
	if _, err := tk.verify(raw, exp.Add(tokenLeeway+time.Second)); !errors.Is(err, errTokenExpired) {
		t.Fatalf("verify after expiry: got %v, want %v", err, errTokenExpired)
	}
	i := len(raw) - 10 // inside the signature
	swap := byte('A')
	if raw[i] == swap {
		swap = 'B'
	}
	forged := raw[:i] + string(swap) + raw[i+1:]
	if _, err := tk.verify(forged, now); !errors.Is(err, errTokenInvalid) {
		t.Fatalf("verify a forged token: got %v, want %v", err, errTokenInvalid)
	}
	if _, ok := tk.verified.get(forged); ok {
		t.Fatal("a forged token was remembered")
	}
}

// An access token has one spelling: another base64url encoding of the same
// signature (other unused bits in its last character, or line breaks, which
// base64 decoders skip) is refused, so that nothing keyed by the token's
// text (the verified-token cache, a log) sees one token under four names.
func TestAccessTokenHasOneSpelling(t *testing.T) {
	t.Parallel()
	tk := newTokens(fuzzTokenKey[:], time.Hour, newSessionCache(nil, time.Hour))
	now := time.Now()
	raw, _, err := tk.issueAccess("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", now)
	if err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, raw[len(raw)-1])
	var spellings []string
	for i := range 4 { // 32 bytes fill 43 characters: the last one's 2 low bits are unused
		if c := alphabet[last&^3|i]; c != raw[len(raw)-1] {
			spellings = append(spellings, raw[:len(raw)-1]+string(c))
		}
	}
	sig := strings.LastIndexByte(raw, '.') + 1
	spellings = append(spellings, raw[:sig+5]+"\n"+raw[sig+5:], raw+"\r\n", raw+"=")
	for _, s := range spellings {
		if _, err := tk.verify(s, now); !errors.Is(err, errTokenInvalid) {
			t.Errorf("verify(%q), another spelling of %q: got %v, want %v", s, raw, err, errTokenInvalid)
		}
	}
}
