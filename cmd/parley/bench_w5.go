package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// w5Report is the outcome of W5: idle Subscribe streams and server memory.
type w5Report struct {
	Workload       string  `json:"workload"`
	Streams        int     `json:"streams"`
	Users          int     `json:"users"`
	Opened         int     `json:"opened"`
	OpenSeconds    float64 `json:"open_seconds"`
	ServerPID      int     `json:"server_pid,omitempty"`
	RSSBeforeKB    int64   `json:"rss_before_kb,omitempty"`
	RSSAfterKB     int64   `json:"rss_after_kb,omitempty"`
	RSSPerStreamKB float64 `json:"rss_per_stream_kb,omitempty"`
}

// streamsPerUser stays within the server's limit of 10 streams per user.
const streamsPerUser = 10

func runW5(ctx context.Context, cl *benchClient, cfg benchConfig) (*w5Report, error) {
	nUsers := (cfg.streams + streamsPerUser - 1) / streamsPerUser
	users, err := cl.newUsers(ctx, "w5u", nUsers, cfg.setup)
	if err != nil {
		return nil, err
	}
	rep := &w5Report{Workload: "w5", Streams: cfg.streams, Users: nUsers, ServerPID: cfg.serverPID}
	if cfg.serverPID != 0 {
		if rep.RSSBeforeKB, err = readRSS(cfg.serverPID); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	subs := make([]*subscriber, cfg.streams)
	defer func() {
		for _, s := range subs {
			if s != nil {
				_ = s.stop()
			}
		}
	}()
	err = forEach(cfg.streams, cfg.setup, func(i int) error {
		subs[i] = cl.subscribe(ctx, users[i/streamsPerUser], nil, "")
		if err := subs[i].waitLive(ctx, 30*time.Second); err != nil {
			return fmt.Errorf("stream %d: %w", i, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.Opened = len(subs)
	rep.OpenSeconds = time.Since(start).Seconds()
	if cfg.serverPID != 0 {
		time.Sleep(500 * time.Millisecond) // let the server settle
		if rep.RSSAfterKB, err = readRSS(cfg.serverPID); err != nil {
			return nil, err
		}
		rep.RSSPerStreamKB = float64(rep.RSSAfterKB-rep.RSSBeforeKB) / float64(rep.Opened)
	}
	if cfg.hold > 0 {
		select {
		case <-time.After(cfg.hold):
		case <-ctx.Done():
		}
	}
	return rep, nil
}

// readRSS returns VmRSS of a process in KiB, from /proc/PID/status.
func readRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read server RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmRSS %q: %w", rest, err)
			}
			return kb, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read server RSS: %w", err)
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func (r *w5Report) table(w io.Writer) {
	fmt.Fprintf(w, "W5: %d idle Subscribe streams over %d users\n", r.Streams, r.Users)
	fmt.Fprintf(w, "  opened %d, all live in %.2f s\n", r.Opened, r.OpenSeconds)
	if r.ServerPID == 0 {
		fmt.Fprintln(w, "  server RSS not measured (give -server-pid)")
		return
	}
	fmt.Fprintf(w, "  server RSS before %d KiB, after %d KiB, %.1f KiB per stream\n", r.RSSBeforeKB, r.RSSAfterKB, r.RSSPerStreamKB)
}
