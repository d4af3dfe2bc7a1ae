package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// w2Report is the outcome of W2: closed-loop senders over many
// conversations, doubled every step until p99 ack passes the limit, then
// bisected between the last level within it and the first beyond.
type w2Report struct {
	Workload      string   `json:"workload"`
	Conversations int      `json:"conversations"`
	Step          string   `json:"step"`
	P99LimitMs    float64  `json:"p99_limit_ms"`
	Steps         []w2Step `json:"steps"`
	BestRate      float64  `json:"best_rate_per_s"`
	BestSenders   int      `json:"best_senders"`
	Deliveries    seqCheck `json:"deliveries"`
	StreamErrors  int      `json:"stream_errors"`
	FirstError    string   `json:"first_error,omitempty"`
}

// w2Step is one level of concurrency.
type w2Step struct {
	Senders int     `json:"senders"`
	Acked   int     `json:"acked"`
	Errors  int     `json:"errors"`
	Rate    float64 `json:"rate_per_s"`
	Ack     latency `json:"ack_latency"`
	CPU     *cpuUse `json:"cpu,omitempty"`
}

func runW2(ctx context.Context, cl *benchClient, cfg benchConfig) (*w2Report, error) {
	pairs, err := setupPairs(ctx, cl, cfg.pairs, cfg.setup)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range pairs {
			_ = p.sub.stop()
		}
	}()
	rep := &w2Report{Workload: "w2", Conversations: cfg.pairs, Step: cfg.step.String(), P99LimitMs: ms(cfg.p99Limit)}
	maxSeq := make([]atomic.Int64, len(pairs))
	var next atomic.Int64 // spreads the senders' messages over the conversations
	rep.Steps, rep.BestRate, rep.BestSenders = rampLevels(ctx, cl, cfg, func(senders int) w2Step {
		return w2Run(ctx, cl, pairs, maxSeq, &next, senders, cfg.step)
	})
	waitUntil(ctx, 5*time.Second, func() bool {
		for i, p := range pairs {
			if p.sub.lastSeq.Load() < maxSeq[i].Load() {
				return false
			}
		}
		return true
	})
	for i, p := range pairs {
		if err := p.sub.stop(); err != nil {
			rep.StreamErrors++
			rep.FirstError = firstOf(rep.FirstError, err.Error())
		}
		rep.Deliveries.add(checkSeqs(p.sub.got, maxSeq[i].Load()))
	}
	return rep, nil
}

// w2Run keeps n senders busy for d, each sending its next message as soon
// as the previous one is acknowledged (closed loop: the rate is what the
// server sustains).
func w2Run(ctx context.Context, cl *benchClient, pairs []w1Pair, maxSeq []atomic.Int64, next *atomic.Int64, n int, d time.Duration) w2Step {
	return closedLoop(ctx, n, d, func(int) error {
		k := next.Add(1)
		i := int(k) % len(pairs)
		seq, err := cl.send(ctx, pairs[i].sender, pairs[i].convID, fmt.Sprintf("w2-%d", k))
		for cur := maxSeq[i].Load(); seq > cur && !maxSeq[i].CompareAndSwap(cur, seq); cur = maxSeq[i].Load() {
		}
		return err
	})
}

// rampLevels runs the ramp of W2 and rpc: run(level) for each level ramp
// chooses, with the CPU it took, until a level has errors or its p99
// passes -p99-limit. It returns the levels run and the highest rate within
// the limit, with its level.
func rampLevels(ctx context.Context, cl *benchClient, cfg benchConfig, run func(level int) w2Step) (steps []w2Step, best float64, bestLevel int) {
	ramp(ctx, cfg.maxSenders, func(level int) bool {
		start := cl.cpuMark(ctx)
		step := run(level)
		step.CPU = cl.cpuMark(ctx).since(start, step.Acked)
		steps = append(steps, step)
		if step.Errors > 0 || step.Ack.P99 > ms(cfg.p99Limit) {
			return false
		}
		if step.Rate > best {
			best, bestLevel = step.Rate, level
		}
		return true
	})
	return steps, best, bestLevel
}

// closedLoop runs n callers for d, each calling call(its index) again as
// soon as the previous call returns, and times every call.
func closedLoop(ctx context.Context, n int, d time.Duration, call func(caller int) error) w2Step {
	var (
		mu      sync.Mutex
		samples []time.Duration
		errs    int
		wg      sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				err := call(c)
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					samples = append(samples, took)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return w2Step{Senders: n, Acked: len(samples), Errors: errs, Rate: float64(len(samples)) / elapsed.Seconds(), Ack: summarize(samples)}
}

// stepRows prints the levels of a closed-loop ramp, headed by what a level
// counts (senders, callers) and its unit of rate.
func stepRows(w io.Writer, who, rate string, steps []w2Step) {
	fmt.Fprintf(w, "  %8s %10s %8s %8s %8s %8s %s\n", who, rate, "p50 ms", "p99 ms", "max ms", "errors", cpuHeader)
	for _, s := range steps {
		fmt.Fprintf(w, "  %8d %10.0f %8.2f %8.2f %8.2f %8d %s\n", s.Senders, s.Rate, s.Ack.P50, s.Ack.P99, s.Ack.Max, s.Errors, s.CPU.cells())
	}
	fmt.Fprintln(w, cpuLegend)
}

func (r *w2Report) table(w io.Writer) {
	fmt.Fprintf(w, "W2: closed-loop senders over %d conversations, %s per level, doubling until p99 ack > %.0f ms, then bisecting\n", r.Conversations, r.Step, r.P99LimitMs)
	stepRows(w, "senders", "msg/s", r.Steps)
	fmt.Fprintf(w, "  highest sustained rate within the limit: %.0f msg/s with %d senders\n", r.BestRate, r.BestSenders)
	r.Deliveries.rows(w)
	if r.StreamErrors > 0 {
		fmt.Fprintf(w, "  stream errors %d: %s\n", r.StreamErrors, r.FirstError)
	}
}
