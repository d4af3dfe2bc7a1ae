package rtc

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestPionWarningsKeepTheirLevelButExpectedOnes(t *testing.T) {
	var buf bytes.Buffer
	l := pionLogs{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))}.NewLogger("pc")
	l.Warnf("Incoming unhandled RTCP ssrc(%d), OnTrack will not be fired", 1234)
	if buf.Len() != 0 {
		t.Fatalf("the unhandled-RTCP warning reached warn level: %s", buf.String())
	}
	l.Warnf("Failed to accept RTCP %v", "boom")
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "Failed to accept RTCP boom") {
		t.Fatalf("another warning was not logged as one: %q", buf.String())
	}
}
