package rtc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/pion/logging"
)

// pionLogs routes Pion's logs into slog: its errors and warnings as such,
// its info as debug and its debug below that (levelPionDebug).
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

// levelPionDebug is below slog.LevelDebug: Pion's debug output is verbose.
const levelPionDebug = slog.LevelDebug - 4

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  {}
func (l pionLogger) Tracef(format string, args ...any) {}
func (l pionLogger) Debug(msg string)                  { l.logf(levelPionDebug, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(levelPionDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(warnLevel(format), format, args...) }
func (l pionLogger) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args...) }

// unhandledRTCP is the start of the warning Pion gives for the first RTCP
// packet of an SSRC no track declared. A participant that only receives
// sends its receiver reports from such an SSRC, so every subscriber causes
// one: expected, and no operator's concern.
const unhandledRTCP = "Incoming unhandled RTCP ssrc"

func warnLevel(format string) slog.Level {
	if strings.HasPrefix(format, unhandledRTCP) {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}
