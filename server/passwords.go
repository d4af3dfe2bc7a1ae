package server

import (
	"context"
	"fmt"

	"github.com/alexedwards/argon2id"
	"github.com/prometheus/client_golang/prometheus"
)

// PasswordParams are the argon2id cost parameters for new password hashes.
type PasswordParams struct {
	MemoryKiB   uint32
	Iterations  uint32
	Parallelism uint8
}

// OWASPPasswordParams is the OWASP minimum for argon2id: 19 MiB, two passes,
// one lane (about 50 ms per hash on a 2-core machine).
var OWASPPasswordParams = PasswordParams{MemoryKiB: 19 * 1024, Iterations: 2, Parallelism: 1}

// passwordHasher hashes and checks passwords with argon2id. Hashing is
// deliberately expensive, so a semaphore bounds how many run at once: a burst
// of logins queues instead of exhausting memory.
type passwordHasher struct {
	params *argon2id.Params
	sem    chan struct{}
	// dummy is a hash of a random password, checked when the user does not
	// exist so that an unknown username costs the same time as a wrong password.
	dummy string
	// checks counts the passwords checked, by result: every guess an
	// attacker gets is one, so it is what login throttling bounds.
	checks *prometheus.CounterVec
}

func newPasswordHasher(p PasswordParams, concurrency int) (*passwordHasher, error) {
	h := &passwordHasher{
		params: &argon2id.Params{
			Memory:      p.MemoryKiB,
			Iterations:  p.Iterations,
			Parallelism: p.Parallelism,
			SaltLength:  16,
			KeyLength:   32,
		},
		sem: make(chan struct{}, max(concurrency, 1)),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_password_checks_total",
			Help: "Passwords checked against a hash (logins and password changes), by result: match or mismatch.",
		}, []string{"result"}),
	}
	dummy, err := argon2id.CreateHash(randomToken(), h.params)
	if err != nil {
		return nil, fmt.Errorf("create dummy password hash: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

func (h *passwordHasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *passwordHasher) release() { <-h.sem }

// hash returns the PHC-format argon2id hash of password.
func (h *passwordHasher) hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	hash, err := argon2id.CreateHash(password, h.params)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

// check reports whether password matches hash, and whether the hash was made
// with other parameters than today's and should be replaced. An empty hash
// (unknown user) is checked against a dummy and never matches.
func (h *passwordHasher) check(ctx context.Context, password, hash string) (match, stale bool, err error) {
	if err := h.acquire(ctx); err != nil {
		return false, false, err
	}
	defer h.release()
	if hash == "" {
		_, _ = argon2id.ComparePasswordAndHash(password, h.dummy)
		h.checks.WithLabelValues("mismatch").Inc()
		return false, false, nil
	}
	match, params, err := argon2id.CheckHash(password, hash)
	if err != nil {
		return false, false, fmt.Errorf("check password hash: %w", err)
	}
	if match {
		h.checks.WithLabelValues("match").Inc()
	} else {
		h.checks.WithLabelValues("mismatch").Inc()
	}
	stale = params.Memory != h.params.Memory || params.Iterations != h.params.Iterations ||
		params.Parallelism != h.params.Parallelism || params.KeyLength != h.params.KeyLength
	return match, stale, nil
}
