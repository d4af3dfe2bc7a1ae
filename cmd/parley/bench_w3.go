package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// w3Report is the outcome of W3: one group whose members all have a stream
// open, messages sent into it at a fixed rate, then at doubling rates.
type w3Report struct {
	Workload   string  `json:"workload"`
	Members    int     `json:"members"`
	Senders    int     `json:"senders"`
	P99LimitMs float64 `json:"p99_limit_ms"`
	// Fixed is the run at -rate for -duration.
	Fixed w3Step `json:"fixed"`
	// Steps double the rate every -step until p99 delivery passes the limit.
	Steps []w3Step `json:"steps"`
	// BestDeliveries is the highest deliveries/s of a run whose p99 delivery
	// latency stayed within the limit, with nothing lost.
	BestDeliveries float64  `json:"best_deliveries_per_s"`
	BestRate       float64  `json:"best_rate_per_s"`
	Deliveries     seqCheck `json:"deliveries"`
	StreamErrors   int      `json:"stream_errors"`
	FirstError     string   `json:"first_error,omitempty"`
}

// w3Step is one run at one rate.
type w3Step struct {
	Rate           float64 `json:"rate_per_s"`
	Duration       string  `json:"duration"`
	Sent           int     `json:"sent"`
	Acked          int     `json:"acked"`
	Errors         int     `json:"errors"`
	Deliveries     int64   `json:"deliveries"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	Ack            latency `json:"ack_latency"`
	Deliver        latency `json:"deliver_latency"`
}

// w3MaxSteps bounds the runs of one W3: the fixed one and the ramp.
const w3MaxSteps = 24

// w3Histogram counts delivery latencies in 100 µs buckets up to 5 s, with
// atomics: every stream adds to it, and a fan-out of 2,000 streams makes too
// many samples to keep one by one.
type w3Histogram struct {
	buckets [50_001]atomic.Int64 // the last one holds everything slower
	count   atomic.Int64
}

const w3Bucket = 100 * time.Microsecond

func (h *w3Histogram) add(d time.Duration) {
	i := int(max(d, 0) / w3Bucket)
	h.buckets[min(i, len(h.buckets)-1)].Add(1)
	h.count.Add(1)
}

// latency summarizes the histogram; a percentile is its bucket's upper edge.
func (h *w3Histogram) latency() latency {
	n := h.count.Load()
	if n == 0 {
		return latency{}
	}
	rank := func(p int64) int64 { return max((p*n+99)/100, 1) }
	out := latency{Count: int(n)}
	var seen int64
	targets := []struct {
		rank int64
		dst  *float64
	}{{rank(50), &out.P50}, {rank(95), &out.P95}, {rank(99), &out.P99}, {n, &out.Max}}
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		for len(targets) > 0 && seen >= targets[0].rank {
			*targets[0].dst = ms(time.Duration(i+1) * w3Bucket)
			targets = targets[1:]
		}
		if len(targets) == 0 {
			break
		}
	}
	return out
}

// w3Stream reads one member's stream and accounts for the group's messages
// without keeping them: seqs must arrive once each, in order.
type w3Stream struct {
	convID string
	hists  *[w3MaxSteps]w3Histogram
	cancel context.CancelFunc
	live   chan struct{}
	done   chan struct{}
	once   sync.Once

	lastSeq atomic.Int64
	// lastAt is when each step's last message arrived here (unix ns).
	lastAt [w3MaxSteps]atomic.Int64
	// Written by the reading goroutine, read after done.
	check seqCheck
	err   error
}

// w3ID names the k-th message of step: the step and its scheduled time
// travel in the client message id, so a stream measures latency alone.
func w3ID(prefix string, step, k int, at time.Time) string {
	return fmt.Sprintf("%s-w3-%d-%d-%d", prefix, step, k, at.UnixNano())
}

func parseW3ID(id string) (step int, at time.Time, ok bool) {
	parts := strings.Split(id, "-")
	if len(parts) < 4 || parts[len(parts)-4] != "w3" {
		return 0, time.Time{}, false
	}
	step, err1 := strconv.Atoi(parts[len(parts)-3])
	ns, err2 := strconv.ParseInt(parts[len(parts)-1], 10, 64)
	if err1 != nil || err2 != nil || step < 0 || step >= w3MaxSteps {
		return 0, time.Time{}, false
	}
	return step, time.Unix(0, ns), true
}

func (s *w3Stream) read(ctx context.Context, cl *benchClient, u benchUser, from int64) {
	defer close(s.done)
	cursors := []*parleyv1.Cursor{{ConversationId: s.convID, Seq: from}}
	stream, err := cl.msgs.Subscribe(u.authed(ctx), &parleyv1.SubscribeRequest{Cursors: cursors})
	if err != nil {
		s.err = fmt.Errorf("subscribe %s: %w", u.name, err)
		return
	}
	defer stream.Close()
	last := from
	for stream.Receive() {
		ev := stream.Msg()
		if ev.GetHeartbeat() != nil {
			s.once.Do(func() { close(s.live) })
			continue
		}
		m := ev.GetMessage()
		if m.GetConversationId() != s.convID {
			continue
		}
		now := time.Now()
		s.check.Delivered++
		switch seq := m.GetSeq(); {
		case seq <= last:
			s.check.Duplicates++
			continue
		case seq > last+1:
			s.check.Lost += int(seq - last - 1)
			fallthrough
		default:
			last = seq
			s.lastSeq.Store(seq)
		}
		if step, at, ok := parseW3ID(m.GetClientMsgId()); ok {
			s.hists[step].add(now.Sub(at))
			s.lastAt[step].Store(now.UnixNano())
		}
	}
	if err := stream.Err(); err != nil && ctx.Err() == nil {
		s.err = fmt.Errorf("stream of %s: %w", u.name, err)
	}
}

func (s *w3Stream) stop() error {
	s.cancel()
	<-s.done
	return s.err
}

// w3Group is the group under test, its members' streams and its senders.
type w3Group struct {
	convID  string
	senders []benchUser
	streams []*w3Stream
	hists   *[w3MaxSteps]w3Histogram
	maxSeq  atomic.Int64
}

func runW3(ctx context.Context, cl *benchClient, cfg benchConfig) (*w3Report, error) {
	g, err := setupW3(ctx, cl, cfg)
	if g != nil {
		defer func() {
			for _, s := range g.streams {
				_ = s.stop()
			}
		}()
	}
	if err != nil {
		return nil, err
	}
	rep := &w3Report{Workload: "w3", Members: cfg.members, Senders: len(g.senders), P99LimitMs: ms(cfg.deliverLimit)}
	within := func(s w3Step) bool { return s.Errors == 0 && s.Deliver.P99 <= ms(cfg.deliverLimit) }
	rep.Fixed = g.run(ctx, cl, 0, cfg.rate, cfg.duration)
	if within(rep.Fixed) {
		rep.BestDeliveries, rep.BestRate = rep.Fixed.DeliveriesPerS, rep.Fixed.Rate
	}
	for i, rate := 1, cfg.rate*2; i < w3MaxSteps && rate <= cfg.maxRate && within(rep.Fixed); i, rate = i+1, rate*2 {
		step := g.run(ctx, cl, i, rate, cfg.step)
		rep.Steps = append(rep.Steps, step)
		if !within(step) || ctx.Err() != nil {
			break
		}
		if step.DeliveriesPerS > rep.BestDeliveries {
			rep.BestDeliveries, rep.BestRate = step.DeliveriesPerS, step.Rate
		}
	}
	for _, s := range g.streams {
		if err := s.stop(); err != nil {
			rep.StreamErrors++
			rep.FirstError = firstOf(rep.FirstError, err.Error())
		}
		c := s.check
		c.Lost += int(max(g.maxSeq.Load()-s.lastSeq.Load(), 0))
		rep.Deliveries.add(c)
	}
	return rep, nil
}

// setupW3 registers the members, has the first create the group and the
// others join it with an invite code (the one way in that needs no
// contacts), and opens every member's stream from the group's position.
func setupW3(ctx context.Context, cl *benchClient, cfg benchConfig) (*w3Group, error) {
	users, err := cl.newUsers(ctx, "w3m", cfg.members, cfg.setup)
	if err != nil {
		return nil, err
	}
	owner := users[0]
	created, err := cl.groups.CreateGroup(owner.authed(ctx), &parleyv1.CreateGroupRequest{Name: "bench " + cl.prefix})
	if err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	convID := created.GetGroup().GetConversationId()
	inv, err := cl.groups.CreateInviteLink(owner.authed(ctx), &parleyv1.CreateInviteLinkRequest{GroupId: convID})
	if err != nil {
		return nil, fmt.Errorf("create invite link: %w", err)
	}
	err = forEach(len(users)-1, cfg.setup, func(i int) error {
		_, err := cl.groups.JoinByInvite(users[i+1].authed(ctx), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()})
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			return fmt.Errorf("join the group: %w (start the server with PARLEY_MAX_GROUP_MEMBERS=%d or more)", err, cfg.members)
		}
		if err != nil {
			return fmt.Errorf("join the group: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	conv, err := cl.msgs.GetConversation(owner.authed(ctx), &parleyv1.GetConversationRequest{ConversationId: convID})
	if err != nil {
		return nil, fmt.Errorf("get conversation: %w", err)
	}
	from := conv.GetConversation().GetLastSeq()
	g := &w3Group{convID: convID, senders: users[:min(cfg.senders, len(users))], hists: new([w3MaxSteps]w3Histogram)}
	g.maxSeq.Store(from)
	for _, u := range users {
		sctx, cancel := context.WithCancel(ctx)
		s := &w3Stream{convID: convID, hists: g.hists, cancel: cancel, live: make(chan struct{}), done: make(chan struct{})}
		s.lastSeq.Store(from)
		g.streams = append(g.streams, s)
		go s.read(sctx, cl, u, from)
	}
	for _, s := range g.streams {
		select {
		case <-s.live:
		case <-s.done:
			return g, errors.Join(errors.New("a member's stream ended before it was live"), s.err)
		case <-time.After(60 * time.Second):
			return g, errors.New("a member's stream is not live after 60s")
		case <-ctx.Done():
			return g, ctx.Err()
		}
	}
	return g, nil
}

// run sends rate×d messages at fixed times, round-robin over the senders
// (open loop: latency counts from the scheduled time, so a server that
// falls behind cannot hide it), then waits for every stream to have them.
func (g *w3Group) run(ctx context.Context, cl *benchClient, step int, rate float64, d time.Duration) w3Step {
	total := max(int(rate*d.Seconds()), 1)
	interval := time.Duration(float64(time.Second) / rate)
	acks := make([]time.Duration, total)
	errs := make([]error, total)
	start := time.Now().Add(20 * time.Millisecond)
	var wg sync.WaitGroup
	sent := 0
	for k := range total {
		at := start.Add(time.Duration(k) * interval)
		time.Sleep(time.Until(at))
		if ctx.Err() != nil {
			break
		}
		sent++
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			seq, err := cl.send(sctx, g.senders[k%len(g.senders)], g.convID, w3ID(cl.prefix, step, k, at))
			acks[k], errs[k] = time.Since(at), err
			for cur := g.maxSeq.Load(); err == nil && seq > cur && !g.maxSeq.CompareAndSwap(cur, seq); cur = g.maxSeq.Load() {
			}
		})
	}
	wg.Wait()
	waitUntil(ctx, 10*time.Second, func() bool {
		for _, s := range g.streams {
			if s.lastSeq.Load() < g.maxSeq.Load() {
				select {
				case <-s.done: // a stream that ended will not catch up
					continue
				default:
					return false
				}
			}
		}
		return true
	})
	out := w3Step{Rate: rate, Duration: d.String(), Sent: sent}
	var acked []time.Duration
	for k := range sent {
		if errs[k] != nil {
			out.Errors++
			continue
		}
		acked = append(acked, acks[k])
	}
	out.Acked = len(acked)
	out.Ack = summarize(acked)
	h := &g.hists[step]
	out.Deliver = h.latency()
	out.Deliveries = h.count.Load()
	var last int64
	for _, s := range g.streams {
		last = max(last, s.lastAt[step].Load())
	}
	if last > 0 {
		out.DeliveriesPerS = float64(out.Deliveries) / time.Unix(0, last).Sub(start).Seconds()
	}
	return out
}

func (r *w3Report) table(w io.Writer) {
	fmt.Fprintf(w, "W3: one group of %d members, every member online, %d senders (open loop)\n", r.Members, r.Senders)
	fmt.Fprintf(w, "  %10s %8s %8s %14s %10s %10s %10s %8s\n", "msg/s", "acked", "errors", "deliveries/s", "p50 ms", "p99 ms", "ack p99", "for")
	for _, s := range append([]w3Step{r.Fixed}, r.Steps...) {
		fmt.Fprintf(w, "  %10.0f %8d %8d %14.0f %10.2f %10.2f %10.2f %8s\n",
			s.Rate, s.Acked, s.Errors, s.DeliveriesPerS, s.Deliver.P50, s.Deliver.P99, s.Ack.P99, s.Duration)
	}
	fmt.Fprintf(w, "  highest deliveries/s with p99 delivery ≤ %.0f ms: %.0f (at %.0f msg/s)\n", r.P99LimitMs, r.BestDeliveries, r.BestRate)
	r.Deliveries.rows(w)
	if r.StreamErrors > 0 {
		fmt.Fprintf(w, "  stream errors %d: %s\n", r.StreamErrors, r.FirstError)
	}
}
