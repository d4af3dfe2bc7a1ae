package rtc_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/parley-chat/parley/rtc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var av = []rtc.Source{rtc.SourceMicrophone, rtc.SourceCamera}

// removeWithin is how fast a departed participant's tracks must disappear.
const removeWithin = 2 * time.Second

func TestOneToOneCall(t *testing.T) {
	// A port range rather than the shared port the other tests use.
	s := newSFU(t, rtc.Config{UDPPortMin: 50000, UDPPortMax: 60000})
	room := newRoom(t, s, "call-1", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)
	b := join(t, room, "bob", av...)

	a.waitReceiving("bob", 50, av...)
	b.waitReceiving("alice", 50, av...)

	t.Run("the first offer has a slot per source", func(t *testing.T) {
		a.mu.Lock()
		first := a.offers[0]
		a.mu.Unlock()
		got := map[rtc.Source]int{}
		for _, src := range first.SendMIDs {
			got[src]++
		}
		for _, src := range []rtc.Source{rtc.SourceMicrophone, rtc.SourceCamera, rtc.SourceScreen} {
			if got[src] != 1 {
				t.Errorf("got %d slots for %s in %v, want 1", got[src], src, first.SendMIDs)
			}
		}
		if first.Revision != 1 {
			t.Errorf("got first revision %d, want 1", first.Revision)
		}
	})

	t.Run("tracks carry their source and the receiving mid", func(t *testing.T) {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, src := range av {
			tr, ok := b.trackFromLocked("alice", src)
			if !ok || tr.MID == "" || tr.StreamID != "alice" {
				t.Errorf("got track %+v for alice's %s, want one with a mid and stream id alice", tr, src)
			}
		}
	})

	t.Run("a stale answer is refused", func(t *testing.T) {
		err := a.p.Answer(1, "v=0")
		if !errors.Is(err, rtc.ErrStaleAnswer) {
			t.Errorf("got %v, want ErrStaleAnswer", err)
		}
	})

	t.Run("mute changes reach the others", func(t *testing.T) {
		if err := a.p.SetMuted(rtc.SourceCamera, true); err != nil {
			t.Fatal(err)
		}
		b.waitUntil("alice's camera is muted", func() bool { return b.mutes["alice/camera"] })
		if err := a.p.SetMuted(rtc.SourceCamera, false); err != nil {
			t.Fatal(err)
		}
		b.waitUntil("alice's camera is unmuted", func() bool { return !b.mutes["alice/camera"] })
		if err := a.p.SetMuted(rtc.SourceUnspecified, true); !errors.Is(err, rtc.ErrInvalidSignal) {
			t.Errorf("muting no source: got %v, want ErrInvalidSignal", err)
		}
	})

	t.Run("ICE restarts and media keeps flowing", func(t *testing.T) {
		a.mu.Lock()
		offers := len(a.offers)
		a.mu.Unlock()
		if err := a.p.RestartICE(); err != nil {
			t.Fatal(err)
		}
		a.waitUntil("an ICE-restart offer arrived", func() bool {
			for _, o := range a.offers[offers:] {
				if o.ICERestart {
					return true
				}
			}
			return false
		})
		for _, c := range []*client{a, b} {
			c.mu.Lock()
			base := map[string]int{}
			for id, n := range c.received {
				base[id] = n
			}
			c.mu.Unlock()
			c.waitUntil("more packets arrive after the restart", func() bool {
				for id, n := range base {
					if c.received[id] < n+50 {
						return false
					}
				}
				return len(base) == 2
			})
		}
		if st := a.p.ConnectionState(); st != webrtc.PeerConnectionStateConnected {
			t.Errorf("got connection state %s, want connected", st)
		}
	})

	t.Run("leaving tells the leaver", func(t *testing.T) {
		b.p.Leave()
		b.waitUntil("bob's Signaler is closed", func() bool { return b.closed })
		if b.closedErr != nil {
			t.Errorf("got Closed(%v), want Closed(nil)", b.closedErr)
		}
		a.waitUntil("bob left", func() bool { return !a.joined["bob"] })
	})
}

func TestH264IsForwardedWhereNegotiated(t *testing.T) {
	s := newSFU(t, rtc.Config{})
	room := newRoom(t, s, "h264", rtc.RoomOptions{})
	a, err := tryJoinWith(t, room, "alice", h264, av...)
	if err != nil {
		t.Fatal(err)
	}
	b := join(t, room, "bob", av...)
	b.waitReceiving("alice", 30, av...)
	a.waitReceiving("bob", 30, av...)
	checked := 0
	for _, c := range []*client{a, b} {
		for _, tr := range c.pc.GetTransceivers() {
			if r := tr.Receiver(); r != nil && tr.Mid() != "" {
				for _, rt := range r.Tracks() {
					c.mu.Lock()
					pub, ok := c.tracks[rt.ID()]
					c.mu.Unlock()
					if !ok || pub.Source != rtc.SourceCamera {
						continue
					}
					want := webrtc.MimeTypeVP8
					if pub.ParticipantID == "alice" {
						want = webrtc.MimeTypeH264
					}
					if got := rt.Codec().MimeType; got != want {
						t.Errorf("%s: got %s's camera as %s, want %s", c.id, pub.ParticipantID, got, want)
					}
					checked++
				}
			}
		}
	}
	if checked != 2 {
		t.Errorf("checked %d cameras' codecs, want 2", checked)
	}
}

func TestThreePartyCall(t *testing.T) {
	s := newSFU(t, rtc.Config{})
	room := newRoom(t, s, "group", rtc.RoomOptions{})
	names := []string{"alice", "bob", "carol"}
	clients := make([]*client, len(names))
	for i, name := range names {
		clients[i] = join(t, room, name, av...)
	}
	for i, c := range clients {
		for j, name := range names {
			if i != j {
				c.waitReceiving(name, 50, av...)
			}
		}
		c.mu.Lock()
		n := len(c.joined)
		c.mu.Unlock()
		if n != 2 {
			t.Errorf("%s: got %d participants joined, want 2", c.id, n)
		}
	}

	// Closing the SFU ends everyone's part, and then refuses new rooms.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		c.mu.Lock()
		closed, err := c.closed, c.closedErr
		c.mu.Unlock()
		if !closed || !errors.Is(err, rtc.ErrClosed) {
			t.Errorf("%s: got closed %v with %v, want Closed(ErrClosed)", c.id, closed, err)
		}
	}
	if _, err := s.CreateRoom("later", rtc.RoomOptions{}); !errors.Is(err, rtc.ErrClosed) {
		t.Errorf("CreateRoom after Close: got %v, want ErrClosed", err)
	}
}

func TestScreenShare(t *testing.T) {
	s := newSFU(t, rtc.Config{})
	room := newRoom(t, s, "share", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)
	b := join(t, room, "bob", av...)
	c := join(t, room, "carol", av...)
	for _, o := range []*client{b, c} {
		o.waitReceiving("alice", 20, av...)
	}

	for round := range 2 {
		// Start: alice sends on the screen slot she was offered.
		a.sending[rtc.SourceScreen].Store(true)
		for _, o := range []*client{b, c} {
			o.waitReceiving("alice", 30, rtc.SourceScreen)
		}
		// Stop: alice stops sending and says so.
		a.sending[rtc.SourceScreen].Store(false)
		if err := a.p.Unpublish(rtc.SourceScreen); err != nil {
			t.Fatal(err)
		}
		for _, o := range []*client{b, c} {
			if took := o.waitGone("alice", rtc.SourceScreen); took > removeWithin {
				t.Errorf("round %d: %s lost the screen after %v, want within %v", round, o.id, took, removeWithin)
			}
			o.waitReceiving("alice", 1, av...) // the camera and microphone stay
		}
	}
	for _, o := range []*client{b, c} {
		o.mu.Lock()
		n := 0
		for _, tr := range o.gone {
			if tr.ParticipantID == "alice" && tr.Source == rtc.SourceScreen {
				n++
			}
		}
		o.mu.Unlock()
		if n != 2 {
			t.Errorf("%s: got %d screen tracks from alice unpublished, want 2", o.id, n)
		}
	}
}

func TestLeaveAndRejoin(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s := newSFU(t, rtc.Config{})
	room := newRoom(t, s, "revolving", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)

	for round := range 5 {
		b := join(t, room, "bob", av...)
		a.waitReceiving("bob", 20, av...)
		b.waitReceiving("alice", 20, av...)

		start := time.Now()
		if round%2 == 0 {
			b.p.Leave()
		} else {
			// Gone without a word: the client's connection closes.
			b.close()
		}
		for _, src := range av {
			a.waitGone("bob", src)
		}
		if took := time.Since(start); took > removeWithin {
			t.Errorf("round %d: bob's tracks went after %v, want within %v", round, took, removeWithin)
		}
		a.waitUntil("bob left", func() bool { return !a.joined["bob"] })
		b.close()
	}
	if got := room.Participants(); len(got) != 1 {
		t.Errorf("got participants %v, want only alice", got)
	}
	a.close()
	room.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRoomLimits(t *testing.T) {
	s := newSFU(t, rtc.Config{MaxVideoParticipants: 2, MaxAudioParticipants: 3})
	tests := []struct {
		name  string
		opts  rtc.RoomOptions
		limit int
	}{
		{"a video room admits MaxVideoParticipants", rtc.RoomOptions{}, 2},
		{"an audio-only room admits MaxAudioParticipants", rtc.RoomOptions{AudioOnly: true}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			room := newRoom(t, s, tt.name, tt.opts)
			defer room.Close()
			var first *client
			for i := range tt.limit {
				c := join(t, room, fmt.Sprint("p", i))
				if first == nil {
					first = c
				}
			}
			first.waitUntil("the first offer arrived", func() bool { return len(first.offers) > 0 })
			first.mu.Lock()
			slots := len(first.offers[0].SendMIDs)
			first.mu.Unlock()
			if want := map[bool]int{false: 3, true: 1}[tt.opts.AudioOnly]; slots != want {
				t.Errorf("got %d send slots, want %d", slots, want)
			}
			if _, err := tryJoin(t, room, "one too many"); !errors.Is(err, rtc.ErrRoomFull) {
				t.Errorf("got %v, want ErrRoomFull", err)
			}
			if _, err := tryJoin(t, room, "p0"); !errors.Is(err, rtc.ErrAlreadyJoined) {
				t.Errorf("joining twice: got %v, want ErrAlreadyJoined", err)
			}
		})
	}
	t.Run("defaults are 16 with video and 50 audio-only", func(t *testing.T) {
		s := newSFU(t, rtc.Config{})
		if got := newRoom(t, s, "v", rtc.RoomOptions{}).Limit(); got != 16 {
			t.Errorf("got %d, want 16", got)
		}
		if got := newRoom(t, s, "a", rtc.RoomOptions{AudioOnly: true}).Limit(); got != 50 {
			t.Errorf("got %d, want 50", got)
		}
	})
	t.Run("room ids are unique and closed rooms refuse joins", func(t *testing.T) {
		room := newRoom(t, s, "once", rtc.RoomOptions{})
		if _, err := s.CreateRoom("once", rtc.RoomOptions{}); !errors.Is(err, rtc.ErrRoomExists) {
			t.Errorf("got %v, want ErrRoomExists", err)
		}
		room.Close()
		if _, err := tryJoin(t, room, "late"); !errors.Is(err, rtc.ErrRoomClosed) {
			t.Errorf("got %v, want ErrRoomClosed", err)
		}
	})
}

func TestKeyframeRequests(t *testing.T) {
	s := newSFU(t, rtc.Config{})
	room := newRoom(t, s, "keyframes", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)
	// Alice is alone: her camera is published but nobody asks for keyframes.
	a.waitUntil("alice is connected", func() bool { return a.pc.ConnectionState() == webrtc.PeerConnectionStateConnected })

	b := join(t, room, "bob")
	a.waitUntil("the SFU asked alice's camera for a keyframe", func() bool { return a.plis[rtc.SourceCamera] > 0 })
	b.waitReceiving("alice", 10, rtc.SourceCamera)

	// Bob's own PLIs reach alice. The SFU spaces the PLIs it forwards, so bob
	// sends one every 100 ms until one arrives.
	a.mu.Lock()
	before := a.plis[rtc.SourceCamera]
	a.mu.Unlock()
	b.mu.Lock()
	tr, _ := b.trackFromLocked("alice", rtc.SourceCamera)
	ssrc := b.remoteSSRC[tr.TrackID]
	b.mu.Unlock()
	done := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = b.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	a.waitUntil("bob's PLI reached alice", func() bool { return a.plis[rtc.SourceCamera] > before })
	close(done)
	<-sent
	if n := a.plis[rtc.SourceMicrophone]; n != 0 {
		t.Errorf("got %d PLIs on the microphone, want 0", n)
	}
}

func TestConnectionFailureRestartsICE(t *testing.T) {
	s := newSFU(t, rtc.Config{DisconnectedTimeout: time.Second, FailedTimeout: 2 * time.Second})
	room := newRoom(t, s, "flaky", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)
	b := join(t, room, "bob", av...)
	a.waitReceiving("bob", 20, av...)
	b.waitReceiving("alice", 20, av...)
	b.mu.Lock()
	offers := len(b.offers)
	b.mu.Unlock()

	// Bob's network drops everything: the SFU sees his connection fail, takes
	// his tracks away from alice, and offers him an ICE restart.
	b.dark.Store(true)
	for _, src := range av {
		a.waitGone("bob", src)
	}
	b.waitUntil("bob got an ICE-restart offer", func() bool {
		for _, o := range b.offers[offers:] {
			if o.ICERestart {
				return true
			}
		}
		return false
	})

	// His network is back: the restarted connection carries his tracks again.
	b.dark.Store(false)
	a.waitReceiving("bob", 20, av...)
	b.mu.Lock()
	base := map[string]int{}
	for id, n := range b.received {
		base[id] = n
	}
	b.mu.Unlock()
	b.waitUntil("alice's media reaches bob again", func() bool {
		for id, n := range base {
			if b.received[id] < n+20 {
				return false
			}
		}
		return true
	})
}

func TestResyncAfterLostSignaling(t *testing.T) {
	s := newSFU(t, rtc.Config{})
	room := newRoom(t, s, "resync", rtc.RoomOptions{})
	a := join(t, room, "alice", av...)
	b := join(t, room, "bob", av...)
	b.waitReceiving("alice", 20, av...)

	// Bob's signaling stream is lost while alice shares her screen: the
	// offer that would add it goes nowhere.
	b.deaf.Store(true)
	b.mu.Lock()
	lost := len(b.offers)
	b.mu.Unlock()
	a.sending[rtc.SourceScreen].Store(true)
	b.waitUntil("the offer adding alice's screen is lost", func() bool { return b.dropped > 0 })

	// A new stream: bob resyncs and gets the whole state and a fresh offer.
	b.deaf.Store(false)
	b.update(func() { clear(b.tracks); clear(b.joined) })
	if err := b.p.Resync(); err != nil {
		t.Fatal(err)
	}
	b.waitReceiving("alice", 20, rtc.SourceMicrophone, rtc.SourceCamera, rtc.SourceScreen)
	b.waitUntil("an ICE restart followed", func() bool {
		for _, o := range b.offers[lost:] {
			if o.ICERestart {
				return true
			}
		}
		return false
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.joined["alice"] {
		t.Error("resync did not announce alice")
	}
}

func TestSharedPortAndPublicIP(t *testing.T) {
	s := newSFU(t, rtc.Config{UDPAddr: "127.0.0.1:0", PublicIPs: []string{"203.0.113.7"}})
	addr, ok := s.LocalAddr().(*net.UDPAddr)
	if !ok || addr.Port == 0 {
		t.Fatalf("got local address %v, want a UDP port", s.LocalAddr())
	}
	room := newRoom(t, s, "nat", rtc.RoomOptions{})
	c := join(t, room, "alice")
	want := fmt.Sprintf("203.0.113.7 %d typ host", addr.Port)
	c.waitUntil("a candidate with the public IP and the shared port arrived", func() bool {
		for _, cand := range c.candidates {
			if strings.Contains(cand, want) {
				return true
			}
		}
		return false
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cand := range c.candidates {
		if strings.Contains(cand, "127.0.0.1") {
			t.Errorf("got candidate %q, want the loopback address replaced", cand)
		}
	}
}
