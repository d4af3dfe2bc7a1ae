package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/parley-chat/parley/db/dbtest"
)

// benchEnv is the environment a server under `parley bench` needs: limits
// off, cheap password hashing, and loopback candidates for call media, since
// the bench's bots run on this machine, which may have no other interface
// (a fresh container, or a network namespace with only lo).
func benchEnv(t *testing.T) map[string]string {
	return map[string]string{
		"PARLEY_DATABASE_URL":           dbtest.URL(t),
		"PARLEY_RTC_LOOPBACK":           "true",
		"PARLEY_REGISTER_LIMIT_ADDRESS": "0",
		"PARLEY_LOGIN_LIMIT_ADDRESS":    "0",
		"PARLEY_LOGIN_LIMIT_ACCOUNT":    "0",
		"PARLEY_SEND_LIMIT":             "0",
		"PARLEY_ARGON2_MEMORY_KIB":      "64",
		"PARLEY_ARGON2_ITERATIONS":      "1",
		"PARLEY_LOG_LEVEL":              "warn",
	}
}

// runBench runs `parley bench` with -json and decodes its report into out.
func runBench(t *testing.T, args []string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	if err := run(ctx, append(append([]string{"bench"}, args...), "-json"), envFrom(nil), &stdout, &stderr); err != nil {
		t.Fatalf("bench %v: %v\nstderr:\n%s", args, err, stderr.String())
	}
	if err := json.Unmarshal([]byte(stdout.String()), out); err != nil {
		t.Fatalf("decode report: %v\nstdout:\n%s", err, stdout.String())
	}
	t.Logf("bench %v:\n%s", args, stdout.String())
}

func TestBench(t *testing.T) {
	url, _ := startServe(t, nil, benchEnv(t))

	t.Run("w1 delivers every acked message once, in order", func(t *testing.T) {
		var r w1Report
		runBench(t, []string{"-target", url, "-workload", "w1", "-pairs", "2", "-rate", "50", "-duration", "1s"}, &r)
		if r.Acked == 0 || r.Errors != 0 || r.StreamErrors != 0 {
			t.Fatalf("acked %d, errors %d, stream errors %d; want acked > 0 and no errors (%s)", r.Acked, r.Errors, r.StreamErrors, r.FirstError)
		}
		if d := r.Deliveries; d.Lost != 0 || d.Duplicates != 0 || d.OutOfOrder != 0 || d.Delivered != r.Acked {
			t.Fatalf("deliveries %+v, want %d delivered and none lost, duplicated or out of order", d, r.Acked)
		}
		if r.Ack.P99 <= 0 || r.Deliver.P99 <= 0 {
			t.Fatalf("p99 ack %v ms, deliver %v ms; want both > 0", r.Ack.P99, r.Deliver.P99)
		}
	})

	t.Run("w2 ramps senders and loses nothing", func(t *testing.T) {
		var r w2Report
		runBench(t, []string{"-target", url, "-workload", "w2", "-pairs", "3", "-step", "300ms", "-max-senders", "4", "-p99-limit", "10s"}, &r)
		if len(r.Steps) != 3 || r.Steps[2].Senders != 4 {
			t.Fatalf("steps %+v, want 1, 2 and 4 senders", r.Steps)
		}
		acked := 0
		for _, s := range r.Steps {
			if s.Errors != 0 || s.Acked == 0 || s.Ack.P99 <= 0 {
				t.Fatalf("step %+v: want acks, latencies and no errors", s)
			}
			// The server and the load tool share this machine: both
			// spend CPU on every message, and the machine is busy.
			if c := s.CPU; c == nil || c.ServerUs <= 0 || c.BenchUs <= 0 || c.Busy <= 0 || c.Busy > 1 {
				t.Fatalf("step %+v: CPU %+v, want server and bench time per message > 0 and busy in (0, 1]", s, s.CPU)
			}
			acked += s.Acked
		}
		if r.BestRate <= 0 || r.BestSenders == 0 {
			t.Fatalf("best rate %v with %d senders, want > 0", r.BestRate, r.BestSenders)
		}
		// Each conversation's first message (from setup) is delivered too.
		if d := r.Deliveries; d.Lost != 0 || d.Duplicates != 0 || d.OutOfOrder != 0 || d.Delivered < acked {
			t.Fatalf("deliveries %+v after %d acks, want all delivered once in order", d, acked)
		}
	})

	t.Run("rpc ramps callers of an RPC without the database", func(t *testing.T) {
		var r rpcReport
		runBench(t, []string{"-target", url, "-workload", "rpc", "-pairs", "3", "-step", "300ms", "-max-senders", "4", "-p99-limit", "10s"}, &r)
		if len(r.Steps) != 3 || r.Steps[2].Senders != 4 {
			t.Fatalf("steps %+v, want 1, 2 and 4 callers", r.Steps)
		}
		for _, s := range r.Steps {
			if s.Errors != 0 || s.Acked == 0 || s.Ack.P99 <= 0 || s.CPU == nil || s.CPU.ServerUs <= 0 {
				t.Fatalf("step %+v: want calls, latencies, the server's CPU per call and no errors", s)
			}
		}
		if r.BestRate <= 0 || r.BestCallers == 0 {
			t.Fatalf("best rate %v with %d callers, want > 0", r.BestRate, r.BestCallers)
		}
	})

	t.Run("w3 fans a group's messages out to every member once, in order", func(t *testing.T) {
		const members = 6
		var r w3Report
		runBench(t, []string{"-target", url, "-workload", "w3", "-members", strconv.Itoa(members), "-senders", "2",
			"-rate", "20", "-duration", "500ms", "-step", "250ms", "-max-rate", "80", "-deliver-limit", "10s"}, &r)
		steps := append([]w3Step{r.Fixed}, r.Steps...)
		if len(steps) != 3 || steps[1].Rate != 40 || steps[2].Rate != 80 {
			t.Fatalf("runs %+v, want 20, 40 and 80 msg/s", steps)
		}
		acked := 0
		for _, s := range steps {
			if s.Errors != 0 || s.Acked == 0 || s.Deliveries != int64(members*s.Acked) || s.Deliver.P99 <= 0 || s.DeliveriesPerS <= 0 {
				t.Fatalf("run %+v: want no errors and every ack delivered to all %d members", s, members)
			}
			acked += s.Acked
		}
		if d := r.Deliveries; d.Lost != 0 || d.Duplicates != 0 || d.OutOfOrder != 0 || d.Delivered != members*acked || r.StreamErrors != 0 {
			t.Fatalf("deliveries %+v, stream errors %d (%s); want %d delivered once in order", d, r.StreamErrors, r.FirstError, members*acked)
		}
		if r.BestDeliveries <= 0 || r.BestRate != 80 {
			t.Fatalf("best %v deliveries/s at %v msg/s, want > 0 at 80", r.BestDeliveries, r.BestRate)
		}
	})

	t.Run("w4 catches an offline user up on every message", func(t *testing.T) {
		var r w4Report
		runBench(t, []string{"-target", url, "-workload", "w4", "-messages", "200"}, &r)
		if r.Acked != 200 || r.Errors != 0 || !r.Complete {
			t.Fatalf("acked %d, errors %d, complete %v; want 200, 0, true (%s)", r.Acked, r.Errors, r.Complete, r.FirstError)
		}
		if d := r.Deliveries; d.Delivered != 200 || d.Lost != 0 || d.Duplicates != 0 || d.OutOfOrder != 0 {
			t.Fatalf("deliveries %+v, want 200 delivered exactly once in order", d)
		}
		if r.CatchUpMs <= 0 {
			t.Fatalf("catch-up %v ms, want > 0", r.CatchUpMs)
		}
	})

	t.Run("sfu forwards the publisher's video to every subscriber and reads the server's CPU", func(t *testing.T) {
		var r sfuReport
		runBench(t, []string{"-target", url, "-workload", "sfu", "-subscribers", "2", "-rate", "100", "-max-rate", "200", "-step", "1s"}, &r)
		var rates []float64 // a rate that lost too much runs again
		for _, s := range r.Steps {
			if !s.Again {
				rates = append(rates, s.Rate)
			}
		}
		if !slices.Equal(rates, []float64{100, 200}) {
			t.Fatalf("steps %+v, want 100 and 200 packets/s", r.Steps)
		}
		for _, s := range r.Steps {
			if s.Sent == 0 || s.Expected != 2*s.Sent || s.Received == 0 || s.Received > s.Expected || s.Lost != s.Expected-s.Received {
				t.Fatalf("step %+v: want packets sent, and received by 2 subscribers, at most once each", s)
			}
			if s.ServerCPU <= 0 || s.CPUPerPacketUs <= 0 || s.PacketsPerCoreS <= 0 || s.Forwarded <= 0 {
				t.Fatalf("step %+v: want the server's CPU time and forwarded packets/s > 0", s)
			}
		}
		// The server runs in this process, so its CPU time includes the
		// bots': the figures are sane, not the server's own.
		if r.BestForwarded <= 0 || r.BestCPUPerPacketUs <= 0 || r.SignalErrors != 0 {
			t.Fatalf("best %v packets/s at %v µs each, signal errors %d (%s); want a step within the loss limit and no errors",
				r.BestForwarded, r.BestCPUPerPacketUs, r.SignalErrors, r.FirstError)
		}
	})

	t.Run("w5 opens idle streams and reads the server's RSS", func(t *testing.T) {
		var r w5Report
		runBench(t, []string{"-target", url, "-workload", "w5", "-streams", "20", "-server-pid", strconv.Itoa(os.Getpid())}, &r)
		if r.Opened != 20 || r.Users < 2 {
			t.Fatalf("opened %d streams over %d users, want 20 over at least 2", r.Opened, r.Users)
		}
		if r.RSSBeforeKB <= 0 || r.RSSAfterKB <= 0 {
			t.Fatalf("RSS before %d KiB, after %d KiB; want both > 0", r.RSSBeforeKB, r.RSSAfterKB)
		}
	})
}

func TestBenchRefusesBadFlags(t *testing.T) {
	var stdout, stderr syncBuffer
	err := run(context.Background(), []string{"bench", "-workload", "w9"}, envFrom(nil), &stdout, &stderr)
	if err == nil {
		t.Fatal("bench -workload w9 = nil, want an error")
	}
}

func TestNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[int]time.Duration{50: 50 * time.Millisecond, 95: 95 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond} {
		if got := nearestRank(s, p); got != want {
			t.Errorf("nearestRank(1..100 ms, %d) = %v, want %v", p, got, want)
		}
	}
	if got := nearestRank([]time.Duration{7}, 99); got != 7 {
		t.Errorf("nearestRank([7], 99) = %v, want 7", got)
	}
}

func TestCheckSeqs(t *testing.T) {
	got := []delivery{{seq: 1}, {seq: 3}, {seq: 2}, {seq: 3}}
	want := seqCheck{Delivered: 4, Lost: 0, Duplicates: 1, OutOfOrder: 1}
	if c := checkSeqs(got, 5); c != (seqCheck{Delivered: 4, Lost: 2, Duplicates: 1, OutOfOrder: 1}) {
		t.Errorf("checkSeqs(1,3,2,3 up to 5) = %+v, want 2 lost (4, 5), 1 duplicate, 1 out of order", c)
	}
	if c := checkSeqs(got, 3); c != want {
		t.Errorf("checkSeqs(1,3,2,3 up to 3) = %+v, want %+v", c, want)
	}
}

func TestW3HistogramPercentiles(t *testing.T) {
	h := new(w3Histogram)
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i)*time.Millisecond - time.Microsecond)
	}
	got := h.latency()
	want := latency{Count: 100, P50: 50, P95: 95, P99: 99, Max: 100}
	if got != want {
		t.Errorf("latency of 1..100 ms (less 1 µs each) = %+v, want %+v (each percentile at its 100 µs bucket's upper edge)", got, want)
	}
	h.add(time.Hour)
	if got := h.latency(); got.Max != ms(50_001*w3Bucket) {
		t.Errorf("max after a sample of an hour = %v ms, want the overflow bucket's edge", got.Max)
	}
}

func TestW3IDCarriesStepAndTime(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	step, got, ok := parseW3ID(w3ID("bn0001", 3, 17, at))
	if !ok || step != 3 || !got.Equal(at) {
		t.Errorf("parseW3ID(w3ID(3, %v)) = %d, %v, %v; want 3, %v, true", at, step, got, ok, at)
	}
	if _, _, ok := parseW3ID("bn0001-42"); ok {
		t.Error("parseW3ID of a W1 id succeeded, want false")
	}
}

func TestBenchW3RateDefaultsTo20(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want float64
	}{
		{[]string{"-workload", "w3"}, 20},
		{[]string{"-workload", "w3", "-rate", "50"}, 50},
		{[]string{"-workload", "w1"}, 200},
	} {
		c, err := parseBenchConfig(tt.args, io.Discard)
		if err != nil || c.rate != tt.want {
			t.Errorf("parseBenchConfig(%v) rate = %v, %v; want %v", tt.args, c.rate, err, tt.want)
		}
	}
}

func TestBenchSFUFlags(t *testing.T) {
	c, err := parseBenchConfig([]string{"-workload", "sfu"}, io.Discard)
	if err != nil || c.maxRate != 12800 || c.rate != 200 || c.subscribers != 8 {
		t.Errorf("parseBenchConfig(-workload sfu) = max rate %v, rate %v, %d subscribers, %v; want 12800, 200, 8", c.maxRate, c.rate, c.subscribers, err)
	}
	if c, _ := parseBenchConfig([]string{"-workload", "sfu", "-max-rate", "1000"}, io.Discard); c.maxRate != 1000 {
		t.Errorf("-max-rate 1000 gave %v", c.maxRate)
	}
	for _, args := range [][]string{{"-subscribers", "16"}, {"-subscribers", "0"}, {"-payload", "1300"}} {
		if _, err := parseBenchConfig(append([]string{"-workload", "sfu"}, args...), io.Discard); err == nil {
			t.Errorf("parseBenchConfig(%v) = nil, want an error", args)
		}
	}
}

func TestSFUSeqsUnwrapAndCount(t *testing.T) {
	var s sfuSeqs
	// 70,000 packets, so the 16-bit numbers wrap; every tenth lost, and a
	// late one and a duplicate among them.
	for n := uint64(0); n < 70_000; n++ {
		if n%10 == 0 {
			continue
		}
		s.add(uint16(n))
		if n == 65_541 {
			s.add(uint16(65_530)) // late, from before the wrap
			s.add(uint16(n - 2))  // duplicate
		}
	}
	if got, want := s.count(0, 70_000), int64(63_001); got != want {
		t.Errorf("count(0, 70000) = %d, want %d", got, want)
	}
	if got, want := s.count(65_530, 65_550), int64(19); got != want {
		t.Errorf("count across the wrap = %d, want %d", got, want)
	}
	if got := s.count(70_000, 80_000); got != 0 {
		t.Errorf("count beyond the last = %d, want 0", got)
	}
}

func TestRampDoublesThenBisects(t *testing.T) {
	tests := []struct {
		name     string
		maxLevel int
		limit    int // the highest level within; levels above fail
		want     []int
	}{
		{"every level within stops at the most allowed", 8, 100, []int{1, 2, 4, 8}},
		{"the first level failing tries nothing more", 8, 0, []int{1}},
		{"a failure after doubling bisects down to an eighth", 512, 40, []int{1, 2, 4, 8, 16, 32, 64, 48, 40, 44}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			ramp(context.Background(), tt.maxLevel, func(level int) bool {
				got = append(got, level)
				return level <= tt.limit
			})
			if !slices.Equal(got, tt.want) {
				t.Fatalf("levels %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMachineCPUCountsBusyTime(t *testing.T) {
	busy, all := machineCPU()
	if all <= 0 || busy <= 0 || busy >= all {
		t.Fatalf("busy %v of %v CPU seconds, want 0 < busy < all on Linux", busy, all)
	}
}
