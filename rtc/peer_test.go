package rtc_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"

	"github.com/parley-chat/parley/rtc"
)

// waitFor is how long the tests wait for anything that should happen.
const waitFor = 15 * time.Second

// newSFU starts an SFU on loopback; by default all peers share one UDP port.
func newSFU(t testing.TB, cfg rtc.Config) *rtc.SFU {
	t.Helper()
	cfg.Loopback = true
	if cfg.UDPAddr == "" && cfg.UDPPortMin == 0 {
		cfg.UDPAddr = "127.0.0.1:0"
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		w := &testWriter{t: t}
		t.Cleanup(w.stop) // runs after the SFU's Close below
		log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := rtc.New(cfg, log)
	if err != nil {
		t.Fatalf("rtc.New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("SFU.Close: %v", err)
		}
	})
	return s
}

// testWriter logs through t until the test ends: some of Pion's goroutines
// outlive a closed PeerConnection by a moment and may still log.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(b[:len(b)-1]))
	}
	return len(b), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

func newRoom(t testing.TB, s *rtc.SFU, id string, opts rtc.RoomOptions) *rtc.Room {
	t.Helper()
	r, err := s.CreateRoom(id, opts)
	if err != nil {
		t.Fatalf("CreateRoom(%q): %v", id, err)
	}
	return r
}

// clientAPI builds a client's own webrtc.API, gathering on loopback only.
// While dark is true, its UDP sockets drop everything they send and receive.
func clientAPI(t testing.TB, dark *atomic.Bool) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	quiet := logging.NewDefaultLoggerFactory()
	quiet.DefaultLogLevel = logging.LogLevelDisabled
	se.LoggerFactory = quiet
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	se.SetNet(darkNet{n, dark})
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
}

// client is a participant's side of a call: a Pion peer connection that
// answers the SFU's offers through an in-process Signaler, sends synthetic RTP
// on the slots it is offered, and counts what it receives.
type client struct {
	t    testing.TB
	id   string
	api  *webrtc.API
	pc   *webrtc.PeerConnection
	p    *rtc.Participant
	room *rtc.Room

	dark  atomic.Bool   // the client's network drops everything
	deaf  atomic.Bool   // the client's signaling drops offers
	ready chan struct{} // closed once Join returned
	sigMu sync.Mutex    // serializes handling offers with close
	stop  chan struct{} // ends the writers
	wg    sync.WaitGroup

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every change below
	offers     []rtc.Offer
	tracks     map[string]rtc.Track // published to this client, by track id
	gone       map[string]rtc.Track // unpublished, by track id
	received   map[string]int       // RTP packets per track id
	joined     map[string]bool      // participants present, as told
	mutes      map[string]bool      // "participant/source" → muted
	plis       map[rtc.Source]int   // keyframe requests received per source
	closedErr  error
	closed     bool
	pending    []webrtc.ICECandidateInit
	candidates []string               // the SFU's, as received
	dropped    int                    // offers dropped while deaf
	remoteSSRC map[string]webrtc.SSRC // of received tracks, by track id

	sending map[rtc.Source]*atomic.Bool
	local   map[rtc.Source]*webrtc.TrackLocalStaticRTP
	attach  map[rtc.Source]bool
}

// sources says which sources a client sends from the start.
func join(t testing.TB, room *rtc.Room, id string, send ...rtc.Source) *client {
	t.Helper()
	c, err := tryJoin(t, room, id, send...)
	if err != nil {
		t.Fatalf("Join(%q): %v", id, err)
	}
	return c
}

func tryJoin(t testing.TB, room *rtc.Room, id string, send ...rtc.Source) (*client, error) {
	t.Helper()
	return tryJoinWith(t, room, id, vp8, send...)
}

var (
	vp8  = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	h264 = webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	}
)

// tryJoinWith joins a client whose camera sends the given codec.
func tryJoinWith(t testing.TB, room *rtc.Room, id string, camera webrtc.RTPCodecCapability, send ...rtc.Source) (*client, error) {
	t.Helper()
	c := &client{
		t: t, id: id, room: room,
		ready: make(chan struct{}), stop: make(chan struct{}), changed: make(chan struct{}),
		tracks: map[string]rtc.Track{}, gone: map[string]rtc.Track{}, received: map[string]int{},
		joined: map[string]bool{}, mutes: map[string]bool{}, plis: map[rtc.Source]int{},
		remoteSSRC: map[string]webrtc.SSRC{},
		sending:    map[rtc.Source]*atomic.Bool{}, local: map[rtc.Source]*webrtc.TrackLocalStaticRTP{},
		attach: map[rtc.Source]bool{},
	}
	c.api = clientAPI(t, &c.dark)
	pc, err := c.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c.pc = pc
	codecs := map[rtc.Source]webrtc.RTPCodecCapability{
		rtc.SourceMicrophone: {MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		rtc.SourceCamera:     camera,
		rtc.SourceScreen:     vp8,
	}
	for src, codec := range codecs {
		tr, err := webrtc.NewTrackLocalStaticRTP(codec, fmt.Sprintf("%s-%s", id, src), id)
		if err != nil {
			t.Fatal(err)
		}
		c.local[src] = tr
		c.sending[src] = &atomic.Bool{}
	}
	for _, src := range send {
		c.sending[src].Store(true)
	}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			return
		}
		<-c.ready
		if c.p != nil {
			_ = c.p.AddCandidate(cand.ToJSON())
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		c.mu.Lock()
		c.remoteSSRC[tr.ID()] = tr.SSRC()
		c.mu.Unlock()
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			c.update(func() { c.received[tr.ID()]++ })
		}
	})
	for src, tr := range c.local {
		c.wg.Add(1)
		go c.write(src, tr)
	}
	t.Cleanup(c.close)

	c.p, err = room.Join(id, c)
	close(c.ready)
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// write sends synthetic RTP on a local track every 10 ms while the source
// is being sent.
func (c *client) write(src rtc.Source, tr *webrtc.TrackLocalStaticRTP) {
	defer c.wg.Done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 200)}
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		if !c.sending[src].Load() {
			continue
		}
		pkt.SequenceNumber++
		pkt.Timestamp += 900
		pkt.Payload[0] = 0x10 // a VP8 descriptor's S bit; any bytes would do
		_ = tr.WriteRTP(pkt)
	}
}

func (c *client) close() {
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	if c.stopped() {
		return
	}
	close(c.stop)
	_ = c.pc.GracefulClose()
	c.wg.Wait()
}

// update changes the client's state under its lock and wakes waiters.
func (c *client) update(fn func()) {
	c.mu.Lock()
	fn()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// waitUntil waits until cond, evaluated under the client's lock, holds. It
// looks again on every change to the client's state, and every 20 ms for
// conditions on anything else (such as the connection state).
func (c *client) waitUntil(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.After(waitFor)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			c.t.Fatalf("%s: timed out waiting until %s; tracks %v, received %v, gone %v", c.id, what, c.tracks, c.received, c.gone)
		}
	}
}

// trackFrom returns the live track published by a participant's source.
func (c *client) trackFromLocked(from string, src rtc.Source) (rtc.Track, bool) {
	for _, tr := range c.tracks {
		if tr.ParticipantID == from && tr.Source == src {
			return tr, true
		}
	}
	return rtc.Track{}, false
}

// waitReceiving waits until the client has received n packets of each source
// from the participant.
func (c *client) waitReceiving(from string, n int, srcs ...rtc.Source) {
	c.t.Helper()
	for _, src := range srcs {
		c.waitUntil(fmt.Sprintf("%d packets of %s's %s arrived", n, from, src), func() bool {
			tr, ok := c.trackFromLocked(from, src)
			return ok && c.received[tr.TrackID] >= n
		})
		c.mu.Lock()
		tr, _ := c.trackFromLocked(from, src)
		slots := c.offers[0].SendMIDs
		c.mu.Unlock()
		if _, ok := slots[tr.MID]; ok || tr.MID == "" {
			c.t.Errorf("%s: %s's %s arrives on mid %q, want a mid apart from the send slots %v", c.id, from, src, tr.MID, slots)
		}
	}
}

// waitGone waits until the participant's source is no longer published to
// the client and returns how long that took.
func (c *client) waitGone(from string, src rtc.Source) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.waitUntil(fmt.Sprintf("%s's %s is unpublished", from, src), func() bool {
		_, ok := c.trackFromLocked(from, src)
		return !ok
	})
	return time.Since(start)
}

// The Signaler, relaying in process.

// stopped reports whether the client was closed: errors after that are the
// SFU's in-flight calls meeting a closed peer connection, not failures.
func (c *client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// fail reports an error unless the client was closed meanwhile.
func (c *client) fail(format string, args ...any) {
	if !c.stopped() {
		c.t.Errorf(format, args...)
	}
}

func (c *client) Offer(o rtc.Offer) {
	<-c.ready
	if c.deaf.Load() {
		c.update(func() { c.dropped++ })
		return
	}
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	if c.stopped() {
		return
	}
	c.update(func() { c.offers = append(c.offers, o) })
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.SDP}); err != nil {
		c.fail("%s: set offer %d: %v", c.id, o.Revision, err)
		return
	}
	for mid, src := range o.SendMIDs {
		if c.attach[src] {
			continue
		}
		for _, tr := range c.pc.GetTransceivers() {
			if tr.Mid() != mid {
				continue
			}
			sender, err := c.api.NewRTPSender(c.local[src], c.pc.SCTP().Transport())
			if err == nil {
				err = tr.SetSender(sender, c.local[src])
			}
			if err != nil {
				c.fail("%s: attach %s to mid %s: %v", c.id, src, mid, err)
				return
			}
			c.attach[src] = true
			c.wg.Add(1)
			go c.readRTCP(src, sender)
		}
	}
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, cand := range pending {
		_ = c.pc.AddICECandidate(cand)
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err == nil {
		err = c.pc.SetLocalDescription(answer)
	}
	if err != nil {
		c.fail("%s: answer offer %d: %v", c.id, o.Revision, err)
		return
	}
	if err := c.p.Answer(o.Revision, answer.SDP); err != nil && !errors.Is(err, rtc.ErrLeft) {
		c.fail("%s: Answer(%d): %v", c.id, o.Revision, err)
	}
}

func (c *client) readRTCP(src rtc.Source, sender *webrtc.RTPSender) {
	defer c.wg.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			if _, ok := pkt.(*rtcp.PictureLossIndication); ok {
				c.update(func() { c.plis[src]++ })
			}
		}
	}
}

func (c *client) Candidate(cand webrtc.ICECandidateInit) {
	c.mu.Lock()
	early := len(c.offers) == 0 && c.dropped == 0
	c.mu.Unlock()
	if early {
		// The Signaler is called in order, and a candidate belongs to an
		// offer: one arriving first is an SFU bug a browser would choke on.
		c.fail("%s: candidate %q before any offer", c.id, cand.Candidate)
	}
	c.update(func() { c.candidates = append(c.candidates, cand.Candidate) })
	if cand.Candidate == "" {
		return
	}
	if c.pc.RemoteDescription() == nil {
		c.mu.Lock()
		c.pending = append(c.pending, cand)
		c.mu.Unlock()
		return
	}
	if err := c.pc.AddICECandidate(cand); err != nil {
		c.fail("%s: add candidate: %v", c.id, err)
	}
}

func (c *client) ParticipantJoined(id string) { c.update(func() { c.joined[id] = true }) }
func (c *client) ParticipantLeft(id string)   { c.update(func() { delete(c.joined, id) }) }

func (c *client) TrackPublished(tr rtc.Track) {
	c.update(func() { c.tracks[tr.TrackID] = tr })
}

func (c *client) TrackUnpublished(tr rtc.Track) {
	c.update(func() {
		delete(c.tracks, tr.TrackID)
		c.gone[tr.TrackID] = tr
	})
}

func (c *client) MuteChanged(id string, src rtc.Source, muted bool) {
	c.update(func() { c.mutes[id+"/"+src.String()] = muted })
}

func (c *client) Closed(err error) {
	c.update(func() { c.closed, c.closedErr = true, err })
}

// darkNet is the host's network, with UDP that can go dark.
type darkNet struct {
	*stdnet.Net
	dark *atomic.Bool
}

func (n darkNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return darkConn{c, n.dark}, nil
}

type darkConn struct {
	transport.UDPConn
	dark *atomic.Bool
}

func (c darkConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.dark.Load() {
		return len(b), nil
	}
	return c.UDPConn.WriteTo(b, addr)
}

func (c darkConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	if c.dark.Load() {
		return len(b), nil
	}
	return c.UDPConn.WriteToUDP(b, addr)
}

func (c darkConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFrom(b)
		if err != nil || !c.dark.Load() {
			return n, addr, err
		}
	}
}

func (c darkConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFromUDP(b)
		if err != nil || !c.dark.Load() {
			return n, addr, err
		}
	}
}
