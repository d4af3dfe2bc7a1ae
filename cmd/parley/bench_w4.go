package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// w4Report is the outcome of W4: an offline user catching up on a burst.
type w4Report struct {
	Workload    string   `json:"workload"`
	Messages    int      `json:"messages"`
	Senders     int      `json:"senders"`
	Acked       int      `json:"acked"`
	Errors      int      `json:"errors"`
	FirstError  string   `json:"first_error,omitempty"`
	SendSeconds float64  `json:"send_seconds"`
	SendRate    float64  `json:"send_rate_per_s"`
	CatchUpMs   float64  `json:"catch_up_ms"`
	Complete    bool     `json:"complete"`
	Deliveries  seqCheck `json:"deliveries"`
}

func runW4(ctx context.Context, cl *benchClient, cfg benchConfig) (*w4Report, error) {
	users, err := cl.newUsers(ctx, "w4u", 2, 2)
	if err != nil {
		return nil, err
	}
	sender, receiver := users[0], users[1]
	convID, err := cl.directConversation(ctx, sender, receiver)
	if err != nil {
		return nil, err
	}
	rep := &w4Report{Workload: "w4", Messages: cfg.messages, Senders: cfg.senders}
	maxSeq := w4Burst(ctx, cl, sender, convID, cfg, rep)
	if rep.Acked == 0 {
		return nil, fmt.Errorf("no message was acked: %s", rep.FirstError)
	}

	// The receiver comes back with the cursor it had before the burst.
	called := time.Now()
	sub := cl.subscribe(ctx, receiver, []*parleyv1.Cursor{{ConversationId: convID, Seq: 0}}, convID)
	rep.Complete = waitUntil(ctx, 60*time.Second, func() bool {
		return sub.lastSeq.Load() >= maxSeq && sub.heartbeats.Load() > 0
	})
	if err := sub.stop(); err != nil {
		return nil, err
	}
	for _, d := range sub.got {
		if d.seq == maxSeq {
			rep.CatchUpMs = ms(d.at.Sub(called))
		}
	}
	rep.Deliveries = checkSeqs(sub.got, maxSeq)
	return rep, nil
}

// w4Burst sends cfg.messages into the conversation as fast as cfg.senders
// concurrent callers can, filling in the send figures; it returns the
// highest seq acked.
func w4Burst(ctx context.Context, cl *benchClient, sender benchUser, convID string, cfg benchConfig, rep *w4Report) int64 {
	seqs := make([]int64, cfg.messages)
	errs := make([]error, cfg.messages)
	var next atomic.Int64
	start := time.Now()
	_ = forEach(cfg.senders, cfg.senders, func(int) error {
		for {
			k := int(next.Add(1) - 1)
			if k >= cfg.messages || ctx.Err() != nil {
				return nil
			}
			seqs[k], errs[k] = cl.send(ctx, sender, convID, fmt.Sprintf("%s-%d", cl.prefix, k))
		}
	})
	elapsed := time.Since(start)
	rep.SendSeconds = elapsed.Seconds()
	var maxSeq int64
	for k, err := range errs {
		if err != nil {
			rep.Errors++
			rep.FirstError = firstOf(rep.FirstError, err.Error())
			continue
		}
		rep.Acked++
		maxSeq = max(maxSeq, seqs[k])
	}
	rep.SendRate = float64(rep.Acked) / elapsed.Seconds()
	return maxSeq
}

func (r *w4Report) table(w io.Writer) {
	fmt.Fprintf(w, "W4: %d messages to an offline user (%d concurrent senders), then Subscribe from its cursor\n", r.Messages, r.Senders)
	fmt.Fprintf(w, "  acked %d, errors %d, burst took %.2f s (%.0f msg/s)\n", r.Acked, r.Errors, r.SendSeconds, r.SendRate)
	fmt.Fprintf(w, "  Subscribe → last message received: %.1f ms (complete: %v)\n", r.CatchUpMs, r.Complete)
	r.Deliveries.rows(w)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}
