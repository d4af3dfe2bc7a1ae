package server

import (
	"sync"
	"time"
)

// Rate is a limit of Burst events, refilled evenly over Per.
type Rate struct {
	Burst int
	Per   time.Duration
}

// interval is the time one event's allowance takes to refill.
func (r Rate) interval() time.Duration { return r.Per / time.Duration(r.Burst) }

// keyedLimiter throttles events per key (an account, a client address) with a
// token bucket each. Its memory is bounded: when it holds maxKeys buckets it
// drops the ones that have refilled completely, which carry no information.
type keyedLimiter struct {
	rate    Rate
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

// bucket is a token bucket: tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

func newKeyedLimiter(r Rate, maxKeys int) *keyedLimiter {
	return &keyedLimiter{rate: r, maxKeys: maxKeys, buckets: make(map[string]*bucket)}
}

// allow takes one event for key. When the key is over its limit it takes
// nothing and returns false and how long until the next event would be allowed.
func (l *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l.rate.Burst <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.sweep(now)
		}
		b = &bucket{tokens: float64(l.rate.Burst), at: now}
		l.buckets[key] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) * float64(l.rate.interval()))
	}
	b.tokens--
	return true, 0
}

// refund gives back an event allow took, for an event that turned out not to
// count (a login attempt that succeeded). A bucket the sweep dropped in
// between is full already.
func (l *keyedLimiter) refund(key string, now time.Time) {
	if l.rate.Burst <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		l.refill(b, now)
		b.tokens = min(b.tokens+1, float64(l.rate.Burst))
	}
}

func (l *keyedLimiter) refill(b *bucket, now time.Time) {
	if now.After(b.at) {
		b.tokens = min(b.tokens+float64(now.Sub(b.at))/float64(l.rate.interval()), float64(l.rate.Burst))
		b.at = now
	}
}

func (l *keyedLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= float64(l.rate.Burst) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxKeys {
		// Every bucket is in use: an attack from very many keys. Forgetting
		// them all is the bounded-memory choice; the per-account and
		// per-address limits still hold for keys seen from now on.
		clear(l.buckets)
	}
}
