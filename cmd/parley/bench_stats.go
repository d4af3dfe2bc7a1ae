package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// latency summarizes samples in milliseconds, by nearest rank.
type latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func summarize(samples []time.Duration) latency {
	if len(samples) == 0 {
		return latency{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return latency{
		Count: len(s),
		P50:   ms(nearestRank(s, 50)),
		P95:   ms(nearestRank(s, 95)),
		P99:   ms(nearestRank(s, 99)),
		Max:   ms(s[len(s)-1]),
	}
}

// nearestRank returns the p-th percentile of sorted samples: the smallest
// sample with at least p% of the samples at or below it.
func nearestRank(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 × n)
	return sorted[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (l latency) row(w io.Writer, name string) {
	fmt.Fprintf(w, "  %-22s %8.2f %8.2f %8.2f %8.2f  (n=%d)\n", name, l.P50, l.P95, l.P99, l.Max, l.Count)
}

func latencyHeader(w io.Writer) {
	fmt.Fprintf(w, "  %-22s %8s %8s %8s %8s\n", "latency (ms)", "p50", "p95", "p99", "max")
}

// seqCheck is how a stream's deliveries of one conversation compare with
// the seqs it should have received exactly once, in order.
type seqCheck struct {
	Delivered  int `json:"delivered"`
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	OutOfOrder int `json:"out_of_order"`
}

// checkSeqs compares delivered seqs with 1..upTo (raised to the highest seq
// delivered): every seq missing is lost, so any gap counts.
func checkSeqs(got []delivery, upTo int64) seqCheck {
	var c seqCheck
	seen := make(map[int64]bool, len(got))
	var prev int64
	for _, d := range got {
		c.Delivered++
		switch {
		case seen[d.seq]:
			c.Duplicates++
		case d.seq < prev:
			c.OutOfOrder++
		}
		seen[d.seq] = true
		prev = max(prev, d.seq)
	}
	upTo = max(upTo, prev)
	for s := int64(1); s <= upTo; s++ {
		if !seen[s] {
			c.Lost++
		}
	}
	return c
}

func (c *seqCheck) add(o seqCheck) {
	c.Delivered += o.Delivered
	c.Lost += o.Lost
	c.Duplicates += o.Duplicates
	c.OutOfOrder += o.OutOfOrder
}

func (c seqCheck) rows(w io.Writer) {
	fmt.Fprintf(w, "  delivered %d, lost %d, duplicates %d, out of order %d\n", c.Delivered, c.Lost, c.Duplicates, c.OutOfOrder)
}
