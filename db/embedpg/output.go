package embedpg

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// maxLine bounds one logged line, so that a runaway line cannot grow the
// buffer without limit.
const maxLine = 16 << 10

// lineLog is the stdout and stderr of a PostgreSQL program: it logs each line
// at Debug level and keeps the last few for error messages. A goroutine copies
// the program's output into it until the program (and, for the postmaster,
// every process it started) has closed its end.
type lineLog struct {
	logger *slog.Logger

	mu      sync.Mutex
	partial []byte
	last    []string // ring of the last tailLines lines
	next    int
}

func newLineLog(logger *slog.Logger) *lineLog {
	return &lineLog{logger: logger}
}

// Write never fails: an error would stop os/exec copying and leave the
// program writing into a closed pipe.
func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) >= maxLine {
				l.emit()
			}
			break
		}
		l.partial = append(l.partial, p[:i]...)
		l.emit()
		p = p[i+1:]
	}
	return n, nil
}

// flush logs a last line that had no newline.
func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.emit()
	}
}

// emit logs and remembers the partial line; l.mu is held.
func (l *lineLog) emit() {
	line := string(bytes.TrimRight(l.partial, "\r"))
	if len(line) > maxLine {
		line = line[:maxLine]
	}
	l.partial = l.partial[:0]
	if strings.TrimSpace(line) == "" {
		return
	}
	l.logger.LogAttrs(context.Background(), slog.LevelDebug, line)
	if len(l.last) < tailLines {
		l.last = append(l.last, line)
		return
	}
	l.last[l.next] = line
	l.next = (l.next + 1) % tailLines
}

// tail returns the last lines, oldest first.
func (l *lineLog) tail() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.last))
	out = append(out, l.last[l.next:]...)
	return append(out, l.last[:l.next]...)
}
