package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/parley-chat/parley/db"
)

// healthChecker answers gRPC health checks: SERVING while PostgreSQL, the
// only source of truth, answers; NOT_SERVING otherwise.
type healthChecker struct {
	db       *db.DB
	relay    *relay       // nil on a single node
	live     func() error // nil: live while the process serves HTTP
	services map[string]bool
}

func (h *healthChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" && !h.services[req.Service] {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %s", req.Service))
	}
	if err := h.ping(ctx); err != nil {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

func (h *healthChecker) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return h.db.Ping(ctx)
}

// liveness is /healthz: the process is up, serving HTTP, and not beyond
// repair. A database that is down fails only readiness: restarting Parley
// would not bring an external one back, and the embedded one is being
// restarted; liveness fails once that has been given up on.
func (h *healthChecker) liveness(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.live != nil {
		// The error names paths; it is in the log, not on this
		// unauthenticated route.
		if h.live() != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("database cannot be brought back; see the log\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}

// readiness is /readyz: the node can serve requests, which needs PostgreSQL.
// Without Redis it still serves (messages are durable and streams catch up
// from PostgreSQL) but reports itself degraded.
func (h *healthChecker) readiness(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.ping(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("database unavailable\n"))
		return
	}
	if h.relay != nil {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := h.relay.ping(ctx); err != nil {
			_, _ = w.Write([]byte("degraded: redis unavailable; live events reach other nodes late\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}
