package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Rate is a limit of Burst events, refilled evenly over Per.
type Rate struct {
	Burst int
	Per   time.Duration
}

// keyedLimiter throttles events per key (an account, a client address) with a
// token bucket each. Its memory is bounded: when it holds maxKeys buckets it
// drops the ones that have refilled completely, which carry no information.
type keyedLimiter struct {
	rate    Rate
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newKeyedLimiter(r Rate, maxKeys int) *keyedLimiter {
	return &keyedLimiter{rate: r, maxKeys: maxKeys, buckets: make(map[string]*rate.Limiter)}
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
		b = rate.NewLimiter(rate.Every(l.rate.Per/time.Duration(l.rate.Burst)), l.rate.Burst)
		l.buckets[key] = b
	}
	r := b.ReserveN(now, 1)
	if delay := r.DelayFrom(now); delay > 0 {
		r.CancelAt(now)
		return false, delay
	}
	return true, 0
}

func (l *keyedLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.rate.Burst) {
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
