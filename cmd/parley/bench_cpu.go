package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuUse is where the CPU of one level went, per operation acknowledged:
// the server's (process_cpu_seconds_total from its /metrics), this load
// tool's, and the rest of the machine's (every busy CPU in /proc/stat less
// those two: the database and everything else on the box, when the server
// and its database share the bench's machine).
type cpuUse struct {
	ServerUs float64 `json:"server_us_per_op"`
	BenchUs  float64 `json:"bench_us_per_op"`
	OtherUs  float64 `json:"other_us_per_op"`
	// Busy is the share of the machine's CPUs in use, 0 to 1.
	Busy float64 `json:"machine_busy"`
}

// cpuMark is a reading of the three clocks behind cpuUse.
type cpuMark struct {
	at         time.Time
	server     float64 // seconds; 0 when unreadable
	self       float64
	busy, all  float64 // machine-wide busy and total CPU seconds
	serverOkay bool
}

func (c *benchClient) cpuMark(ctx context.Context) cpuMark {
	m := cpuMark{at: time.Now(), self: selfCPU()}
	m.busy, m.all = machineCPU()
	if s, err := c.serverCPU(ctx); err == nil {
		m.server, m.serverOkay = s, true
	}
	return m
}

// since returns the CPU spent from start to m per op of ops; nil when the
// clocks cannot say (no ops, or no /proc).
func (m cpuMark) since(start cpuMark, ops int) *cpuUse {
	if ops == 0 || m.all <= start.all {
		return nil
	}
	us := func(sec float64) float64 { return sec / float64(ops) * 1e6 }
	// The differences of float sums of /proc/stat's ticks can put a fully
	// busy machine a rounding error above 1 (1.0000000000023 was seen).
	u := &cpuUse{BenchUs: us(m.self - start.self), Busy: min(1, (m.busy-start.busy)/(m.all-start.all))}
	if m.serverOkay && start.serverOkay {
		u.ServerUs = us(m.server - start.server)
	}
	u.OtherUs = max(0, us(m.busy-start.busy)-u.ServerUs-u.BenchUs)
	return u
}

// machineCPU returns the busy and total CPU seconds of all CPUs from the
// first line of /proc/stat (in ticks of 1/100 s), or zeros where there is
// none. Idle and iowait count as not busy.
func machineCPU() (busy, all float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal …; guest time is
	// already inside user.
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, 0
		}
		all += n
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy / 100, all / 100
}

// ramp finds the highest level that keeps within: it doubles the level
// from 1 up to maxLevel until one fails, then bisects between the last
// level within and the first beyond down to an eighth of the former, so the
// answer is not off by up to half for the coarse doubling.
func ramp(ctx context.Context, maxLevel int, within func(level int) bool) {
	good, bad := 0, 0
	for level := 1; level <= maxLevel && ctx.Err() == nil; level *= 2 {
		if !within(level) {
			bad = level
			break
		}
		good = level
	}
	for good > 0 && bad > 0 && bad-good > max(1, good/8) && ctx.Err() == nil {
		mid := (good + bad) / 2
		if within(mid) {
			good = mid
		} else {
			bad = mid
		}
	}
}

// cpuHeader and cpuLegend head and explain the columns of cells.
const (
	cpuHeader = "  server µs   bench µs   other µs   busy"
	cpuLegend = "  (CPU per acknowledged operation: the server's, the load tool's, and the rest of the machine's, which is the database's when it shares the box; busy: share of all CPUs)"
)

// cells formats u as the columns under cpuHeader.
func (u *cpuUse) cells() string {
	if u == nil {
		return fmt.Sprintf("%11s %10s %10s %6s", "-", "-", "-", "-")
	}
	return fmt.Sprintf("%11.0f %10.0f %10.0f %5.0f%%", u.ServerUs, u.BenchUs, u.OtherUs, u.Busy*100)
}
