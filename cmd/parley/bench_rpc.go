package main

import (
	"context"
	"fmt"
	"io"
	"time"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// rpcReport is the outcome of the rpc workload: the same closed-loop ramp
// as W2, over the same connections and with the same authentication, but
// of an RPC that touches no database (GetIceServers). Its best rate is the
// ceiling the RPC layer alone puts on any workload on this machine, the
// yardstick for W2.
type rpcReport struct {
	Workload    string   `json:"workload"`
	Users       int      `json:"users"`
	Step        string   `json:"step"`
	P99LimitMs  float64  `json:"p99_limit_ms"`
	Steps       []w2Step `json:"steps"`
	BestRate    float64  `json:"best_rate_per_s"`
	BestCallers int      `json:"best_callers"`
}

func runRPC(ctx context.Context, cl *benchClient, cfg benchConfig) (*rpcReport, error) {
	users, err := cl.newUsers(ctx, "c", cfg.pairs, cfg.setup)
	if err != nil {
		return nil, err
	}
	rep := &rpcReport{Workload: "rpc", Users: cfg.pairs, Step: cfg.step.String(), P99LimitMs: ms(cfg.p99Limit)}
	var next int
	rep.Steps, rep.BestRate, rep.BestCallers = rampLevels(ctx, cl, cfg, func(callers int) w2Step {
		return rpcRun(ctx, users, &next, callers, cfg.step)
	})
	return rep, nil
}

// rpcRun keeps n callers busy for d; caller c acts as user
// (next+c) mod len(users).
func rpcRun(ctx context.Context, users []benchUser, next *int, n int, d time.Duration) w2Step {
	first := *next
	*next += n
	return closedLoop(ctx, n, d, func(c int) error {
		u := users[(first+c)%len(users)]
		_, err := u.calls.GetIceServers(u.authed(ctx), &parleyv1.GetIceServersRequest{})
		return err
	})
}

func (r *rpcReport) table(w io.Writer) {
	fmt.Fprintf(w, "rpc: closed-loop GetIceServers (no database) by %d users, %s per level, doubling until p99 > %.0f ms, then bisecting\n", r.Users, r.Step, r.P99LimitMs)
	stepRows(w, "callers", "calls/s", r.Steps)
	fmt.Fprintf(w, "  highest sustained rate within the limit: %.0f calls/s with %d callers\n", r.BestRate, r.BestCallers)
}
