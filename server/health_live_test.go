package server_test

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/parley-chat/parley/server"
)

// /healthz follows Config.Liveness: it fails only once the database cannot
// be brought back, and says so without the error's details.
func TestHealthzFailsOnlyWhenDatabaseIsBeyondRepair(t *testing.T) {
	t.Parallel()
	var gaveUp atomic.Pointer[error]
	e := newEnv(t, func(c *server.Config) {
		c.Liveness = func() error {
			if err := gaveUp.Load(); err != nil {
				return *err
			}
			return nil
		}
	})
	if code, _ := e.get("/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz while live = %d, want 200", code)
	}
	err := errors.New("embedpg: gave up on /secret/data/dir")
	gaveUp.Store(&err)
	code, body := e.get("/healthz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("GET /healthz after giving up = %d, want 503", code)
	}
	if strings.Contains(body, "/secret") {
		t.Errorf("GET /healthz body %q shows the error's details", body)
	}
	// Readiness answers for the database itself, which this test's is.
	if code, _ := e.get("/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz = %d, want 200", code)
	}
}
