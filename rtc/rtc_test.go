package rtc_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/parley-chat/parley/rtc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var av = []rtc.Source{rtc.SourceMicrophone, rtc.SourceCamera}

func TestOneToOneCall(t *testing.T) {
	s := newSFU(t, rtc.Config{UDPPortMin: 50000, UDPPortMax: 60000})
	room := newRoom(t, s, "call-1", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)
	b := join(t, room, "bob", av...)

	a.waitReceiving("bob", 50, av...)
	b.waitReceiving("alice", 50, av...)
}
