package server

import (
	"context"
	"errors"
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
