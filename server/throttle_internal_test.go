package server

import (
	"strings"
	"testing"
	"time"
)

func TestDeviceTokensNameOnlyTheirOwnUnexpiredDevice(t *testing.T) {
	t.Parallel()
	const alice, bob = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
	d := newDeviceTokens([]byte("a key every node shares"))
	now := time.Now()
	token := d.issue(alice, "phone", now)
	if dev, ok := d.verify(token, alice, now.Add(time.Hour)); !ok || dev != "phone" {
		t.Fatalf("verify(own token) = %q, %v; want phone, true", dev, ok)
	}
	i := strings.LastIndexByte(token, '.')
	for name, bad := range map[string]struct {
		token, user string
		at          time.Time
	}{
		"another user's":          {token, bob, now},
		"an unknown user's":       {token, "", now},
		"expired":                 {token, alice, now.Add(deviceTokenTTL + time.Second)},
		"with another device id":  {strings.Replace(token, "phone", "tablet", 1), alice, now},
		"with a changed time":     {strings.Replace(token, ".1", ".2", 1), alice, now},
		"with a cut signature":    {token[:len(token)-1], alice, now},
		"without a signature":     {token[:i], alice, now},
		"signed with another key": {newDeviceTokens([]byte("another key")).issue(alice, "phone", now), alice, now},
		"empty":                   {"", alice, now},
		"of dots only":            {"...", alice, now},
	} {
		if dev, ok := d.verify(bad.token, bad.user, bad.at); ok {
			t.Errorf("verify(%s token) = %q, true; want false", name, dev)
		}
	}
}

func TestAddressKeyCountsIPv6PerSlash64(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7",
		"2001:db8:1:2:aaaa::1":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::9": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":           "2001:db8:1:3::/64",
		"::ffff:192.0.2.7":          "::ffff:192.0.2.7",
		"not an address":            "not an address",
		"":                          "",
	} {
		if got := addressKey(addr); got != want {
			t.Errorf("addressKey(%q) = %q, want %q", addr, got, want)
		}
	}
}

func TestKeyedLimiterRefundGivesBackOnlyWhatWasTaken(t *testing.T) {
	t.Parallel()
	l := newKeyedLimiter(Rate{Burst: 2, Per: time.Hour}, 10)
	now := time.Now()
	for range 2 {
		if ok, _ := l.allow("k", now); !ok {
			t.Fatal("refused within the burst")
		}
	}
	if ok, wait := l.allow("k", now); ok || wait <= 0 || wait > 30*time.Minute {
		t.Fatalf("allow over the burst = %v, %v; want false and at most 30m", ok, wait)
	}
	l.refund("k", now)
	if ok, _ := l.allow("k", now); !ok {
		t.Fatal("refused after a refund")
	}
	// Refunds never raise a bucket above its burst.
	l.refund("k", now)
	l.refund("k", now)
	l.refund("k", now)
	for i := range 3 {
		if ok, _ := l.allow("k", now); ok != (i < 2) {
			t.Fatalf("allow %d after refunds = %v", i, ok)
		}
	}
}
