package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// w1Report is the outcome of W1: 1:1 pairs at a fixed total rate.
type w1Report struct {
	Workload     string   `json:"workload"`
	Pairs        int      `json:"pairs"`
	Rate         float64  `json:"rate"`
	Duration     string   `json:"duration"`
	Sent         int      `json:"sent"`
	Acked        int      `json:"acked"`
	Errors       int      `json:"errors"`
	StreamErrors int      `json:"stream_errors"`
	FirstError   string   `json:"first_error,omitempty"`
	Throughput   float64  `json:"throughput_per_s"`
	Ack          latency  `json:"ack_latency"`
	Deliver      latency  `json:"deliver_latency"`
	Deliveries   seqCheck `json:"deliveries"`
}

// w1Send is one scheduled Send and its outcome, written by its goroutine.
type w1Send struct {
	pair      int
	scheduled time.Time
	id        string
	ack       time.Duration
	seq       int64
	err       error
}

// w1Pair is a sender, its receiver's live stream and their conversation.
type w1Pair struct {
	sender benchUser
	convID string
	sub    *subscriber
}

func runW1(ctx context.Context, cl *benchClient, cfg benchConfig) (*w1Report, error) {
	pairs, err := setupPairs(ctx, cl, cfg.pairs, cfg.setup)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range pairs {
			_ = p.sub.stop()
		}
	}()
	sends := w1Schedule(ctx, cl, pairs, cfg.rate, cfg.duration)
	maxSeq := make([]int64, len(pairs))
	for _, s := range sends {
		maxSeq[s.pair] = max(maxSeq[s.pair], s.seq)
	}
	// Wait a little for deliveries still on their way.
	waitUntil(ctx, 5*time.Second, func() bool {
		for i, p := range pairs {
			if p.sub.lastSeq.Load() < maxSeq[i] {
				return false
			}
		}
		return true
	})
	rep := &w1Report{Workload: "w1", Pairs: cfg.pairs, Rate: cfg.rate, Duration: cfg.duration.String()}
	for i, p := range pairs {
		if err := p.sub.stop(); err != nil {
			rep.StreamErrors++
			rep.FirstError = firstOf(rep.FirstError, err.Error())
		}
		rep.Deliveries.add(checkSeqs(p.sub.got, maxSeq[i]))
	}
	rep.summarize(sends, pairs)
	return rep, nil
}

// setupPairs registers n senders and receivers, creates their conversations
// and opens every receiver's stream, returning once all are live.
func setupPairs(ctx context.Context, cl *benchClient, n, concurrency int) ([]w1Pair, error) {
	senders, err := cl.newUsers(ctx, "s", n, concurrency)
	if err != nil {
		return nil, err
	}
	receivers, err := cl.newUsers(ctx, "r", n, concurrency)
	if err != nil {
		return nil, err
	}
	pairs := make([]w1Pair, n)
	err = forEach(n, concurrency, func(i int) error {
		conv, err := cl.directConversation(ctx, senders[i], receivers[i])
		pairs[i] = w1Pair{sender: senders[i], convID: conv}
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range pairs {
		cursors := []*parleyv1.Cursor{{ConversationId: pairs[i].convID, Seq: 0}}
		pairs[i].sub = cl.subscribe(ctx, receivers[i], cursors, pairs[i].convID)
	}
	for _, p := range pairs {
		if err := p.sub.waitLive(ctx, 30*time.Second); err != nil {
			for _, q := range pairs {
				_ = q.sub.stop()
			}
			return nil, fmt.Errorf("open receiver streams: %w", err)
		}
	}
	return pairs, nil
}

// w1Schedule sends rate×duration messages round-robin over the pairs, each
// at its fixed time in its own goroutine (open loop), and waits for all
// acks.
func w1Schedule(ctx context.Context, cl *benchClient, pairs []w1Pair, rate float64, duration time.Duration) []w1Send {
	total := max(int(rate*duration.Seconds()), 1)
	interval := time.Duration(float64(time.Second) / rate)
	sends := make([]w1Send, total)
	start := time.Now().Add(20 * time.Millisecond)
	var wg sync.WaitGroup
	for k := range sends {
		at := start.Add(time.Duration(k) * interval)
		time.Sleep(time.Until(at))
		if ctx.Err() != nil {
			sends = sends[:k]
			break
		}
		sends[k] = w1Send{pair: k % len(pairs), scheduled: at, id: fmt.Sprintf("%s-%d", cl.prefix, k)}
		wg.Go(func() {
			s := &sends[k]
			p := pairs[s.pair]
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			s.seq, s.err = cl.send(sctx, p.sender, p.convID, s.id)
			s.ack = time.Since(s.scheduled)
		})
	}
	wg.Wait()
	return sends
}

// summarize fills in counts and latencies from the sends and deliveries.
func (r *w1Report) summarize(sends []w1Send, pairs []w1Pair) {
	scheduled := make(map[string]time.Time, len(sends))
	var acks []time.Duration
	var lastAck time.Duration
	for _, s := range sends {
		r.Sent++
		if s.err != nil {
			r.Errors++
			r.FirstError = firstOf(r.FirstError, s.err.Error())
			continue
		}
		r.Acked++
		acks = append(acks, s.ack)
		scheduled[s.id] = s.scheduled
		lastAck = max(lastAck, s.scheduled.Sub(sends[0].scheduled)+s.ack)
	}
	if lastAck > 0 {
		r.Throughput = float64(r.Acked) / lastAck.Seconds()
	}
	r.Ack = summarize(acks)
	var delivers []time.Duration
	for _, p := range pairs {
		seen := make(map[string]bool)
		for _, d := range p.sub.got {
			if at, ok := scheduled[d.clientMsgID]; ok && !seen[d.clientMsgID] {
				seen[d.clientMsgID] = true
				delivers = append(delivers, d.at.Sub(at))
			}
		}
	}
	r.Deliver = summarize(delivers)
}

func (r *w1Report) table(w io.Writer) {
	fmt.Fprintf(w, "W1: %d pairs, %.0f msg/s for %s (open loop)\n", r.Pairs, r.Rate, r.Duration)
	fmt.Fprintf(w, "  sent %d, acked %d, errors %d, stream errors %d, throughput %.1f acked/s\n", r.Sent, r.Acked, r.Errors, r.StreamErrors, r.Throughput)
	latencyHeader(w)
	r.Ack.row(w, "ack")
	r.Deliver.row(w, "send→deliver")
	r.Deliveries.rows(w)
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}

// firstOf returns a unless it is empty, else b.
func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
