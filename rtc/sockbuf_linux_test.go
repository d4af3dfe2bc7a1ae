package rtc_test

import (
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/parley-chat/parley/rtc"
)

func TestSharedSocketHasLargeBuffers(t *testing.T) {
	s := newSFU(t, rtc.Config{UDPAddr: "127.0.0.1:0"})
	raw, err := rtc.SharedConn(s).(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, limit string
		opt         int
	}{
		{"receive", "/proc/sys/net/core/rmem_max", syscall.SO_RCVBUF},
		{"send", "/proc/sys/net/core/wmem_max", syscall.SO_SNDBUF},
	} {
		b, err := os.ReadFile(tt.limit)
		if err != nil {
			t.Skipf("no %s: %v", tt.limit, err)
		}
		limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %v", tt.limit, err)
		}
		var got int
		var gerr error
		if err := raw.Control(func(fd uintptr) { got, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, tt.opt) }); err != nil || gerr != nil {
			t.Fatalf("getsockopt: %v, %v", err, gerr)
		}
		// Linux grants what was asked, capped at the limit, and reports it
		// doubled (for its own overhead).
		if want := 2 * min(4<<20, limit); got < want {
			t.Errorf("%s buffer %d bytes, want %d (4 MiB capped at %s = %d, doubled)", tt.name, got, want, tt.limit, limit)
		}
	}
}
