package server_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/rtc"
	"github.com/parley-chat/parley/server"
)

// peer is a call participant's client: a Pion peer connection that answers
// the server's offers from its Signals stream, attaches a local track to
// every slot the server offers (microphone; in video calls camera and
// screen too), sends synthetic RTP on those whose source is on (the
// microphone from the start, others after send), and counts the packets it
// receives per publisher and per publisher and source. It keeps every
// signal it got for until.
type peer struct {
	t      testing.TB
	calls  parleyv1connect.CallsServiceClient
	who    account
	callID string
	api    *webrtc.API
	pc     *webrtc.PeerConnection
	local  map[parleyv1.TrackSource]*webrtc.TrackLocalStaticRTP
	on     map[parleyv1.TrackSource]*atomic.Bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ended  chan struct{} // the Signals stream ended

	mu       sync.Mutex
	attached map[parleyv1.TrackSource]bool
	received map[string]int                      // RTP packets by the publisher's stream id
	bySource map[string]int                      // RTP packets by "publisher/source"
	tracks   map[string]*parleyv1.TrackPublished // announced tracks by track id
	signals  []*parleyv1.SignalsResponse
	changed  chan struct{}  // closed and replaced when signals grows
	first    *parleyv1.Call // the stream's first message
}

func newPeer(t testing.TB, calls parleyv1connect.CallsServiceClient, who account, callID string) *peer {
	return newPeerSending(t, calls, who, callID, parleyv1.TrackSource_TRACK_SOURCE_MICROPHONE)
}

// newPeerSending is newPeer sending from the given sources from the start.
func newPeerSending(t testing.TB, calls parleyv1connect.CallsServiceClient, who account, callID string, sources ...parleyv1.TrackSource) *peer {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
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
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(who.ctx(), 30*time.Second)
	p := &peer{
		t: t, calls: calls, who: who, callID: callID, api: api, pc: pc, ctx: ctx, cancel: cancel, ended: make(chan struct{}),
		local: map[parleyv1.TrackSource]*webrtc.TrackLocalStaticRTP{}, on: map[parleyv1.TrackSource]*atomic.Bool{},
		attached: map[parleyv1.TrackSource]bool{}, received: map[string]int{}, bySource: map[string]int{},
		tracks: map[string]*parleyv1.TrackPublished{}, changed: make(chan struct{}),
	}
	vp8 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	for src, codec := range map[parleyv1.TrackSource]webrtc.RTPCodecCapability{
		parleyv1.TrackSource_TRACK_SOURCE_MICROPHONE: {MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		parleyv1.TrackSource_TRACK_SOURCE_CAMERA:     vp8,
		parleyv1.TrackSource_TRACK_SOURCE_SCREEN:     vp8,
	} {
		tr, err := webrtc.NewTrackLocalStaticRTP(codec, strings.ToLower(src.String()), who.user.GetId())
		if err != nil {
			t.Fatal(err)
		}
		p.local[src], p.on[src] = tr, &atomic.Bool{}
	}
	for _, src := range sources {
		p.on[src].Store(true)
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return
		}
		init := c.ToJSON()
		cand := &parleyv1.IceCandidate{Candidate: init.Candidate, SdpMid: init.SDPMid}
		if init.SDPMLineIndex != nil {
			i := uint32(*init.SDPMLineIndex)
			cand.SdpMlineIndex = &i
		}
		_ = p.signal(ctx, &parleyv1.SignalRequest{CallId: callID, Signal: &parleyv1.SignalRequest_Candidate{Candidate: cand}})
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			p.mu.Lock()
			p.received[tr.StreamID()]++
			if pub := p.tracks[tr.ID()]; pub != nil {
				p.bySource[pub.GetUserId()+"/"+pub.GetSource().String()]++
			}
			p.mu.Unlock()
		}
	})
	stream, err := calls.Signals(ctx, &parleyv1.SignalsRequest{CallId: callID})
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("Signals(%s): %v", who.user.GetUsername(), stream.Err())
	}
	p.first = stream.Msg().GetCall()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.ended)
		defer stream.Close()
		for stream.Receive() {
			p.handle(ctx, stream.Msg())
		}
	}()
	for src, tr := range p.local {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.write(ctx, src, tr)
		}()
	}
	t.Cleanup(p.close)
	return p
}

// write sends synthetic RTP on a local track every 10 ms while its source
// is on.
func (p *peer) write(ctx context.Context, src parleyv1.TrackSource, tr *webrtc.TrackLocalStaticRTP) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 100)}
	step := uint32(480)
	if src != parleyv1.TrackSource_TRACK_SOURCE_MICROPHONE {
		step = 900
		pkt.Payload[0] = 0x10 // VP8 payload descriptor: start of partition
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !p.on[src].Load() {
			continue
		}
		pkt.SequenceNumber++
		pkt.Timestamp += step
		_ = tr.WriteRTP(pkt)
	}
}

// send starts or stops sending from a source; stopping also unpublishes it.
func (p *peer) send(src parleyv1.TrackSource, on bool) {
	p.t.Helper()
	p.on[src].Store(on)
	if on {
		return
	}
	err := p.signal(p.ctx, &parleyv1.SignalRequest{CallId: p.callID, Signal: &parleyv1.SignalRequest_Unpublish{Unpublish: &parleyv1.UnpublishTrack{Source: src}}})
	if err != nil {
		p.t.Fatalf("Signal(unpublish %v): %v", src, err)
	}
}

func (p *peer) handle(ctx context.Context, m *parleyv1.SignalsResponse) {
	p.mu.Lock()
	p.signals = append(p.signals, m)
	if tp := m.GetTrackPublished(); tp != nil {
		p.tracks[tp.GetTrackId()] = tp
	}
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	switch {
	case m.GetOffer() != nil:
		o := m.GetOffer()
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.GetSdp()}); err != nil {
			if ctx.Err() == nil { // else closing
				p.t.Errorf("set offer: %v", err)
			}
			return
		}
		for mid, src := range o.GetSendMids() {
			p.mu.Lock()
			done := p.attached[src]
			p.mu.Unlock()
			if done {
				continue
			}
			for _, tr := range p.pc.GetTransceivers() {
				if tr.Mid() != mid {
					continue
				}
				sender, err := p.api.NewRTPSender(p.local[src], p.pc.SCTP().Transport())
				if err == nil {
					err = tr.SetSender(sender, p.local[src])
				}
				if err != nil {
					if ctx.Err() == nil {
						p.t.Errorf("attach %v: %v", src, err)
					}
					return
				}
				p.mu.Lock()
				p.attached[src] = true
				p.mu.Unlock()
			}
		}
		answer, err := p.pc.CreateAnswer(nil)
		if err == nil {
			err = p.pc.SetLocalDescription(answer)
		}
		if err != nil {
			if ctx.Err() == nil {
				p.t.Errorf("answer: %v", err)
			}
			return
		}
		err = p.signal(ctx, &parleyv1.SignalRequest{CallId: p.callID, Signal: &parleyv1.SignalRequest_Answer{Answer: &parleyv1.SdpAnswer{Sdp: answer.SDP, Revision: o.GetRevision()}}})
		if err != nil && ctx.Err() == nil {
			p.t.Errorf("Signal(answer): %v", err)
		}
	case m.GetCandidate() != nil:
		c := m.GetCandidate()
		init := webrtc.ICECandidateInit{Candidate: c.GetCandidate(), SDPMid: c.SdpMid}
		if c.SdpMlineIndex != nil {
			i := uint16(c.GetSdpMlineIndex())
			init.SDPMLineIndex = &i
		}
		if init.Candidate != "" {
			_ = p.pc.AddICECandidate(init)
		}
	}
}

// until waits until the peer got a signal that match accepts, and returns it.
func (p *peer) until(within time.Duration, what string, match func(*parleyv1.SignalsResponse) bool) *parleyv1.SignalsResponse {
	p.t.Helper()
	deadline := time.After(within)
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.signals); seen++ {
			if match(p.signals[seen]) {
				m := p.signals[seen]
				p.mu.Unlock()
				return m
			}
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			p.t.Fatalf("%s got no %s within %v", p.who.user.GetUsername(), what, within)
			return nil
		}
	}
}

// signal sends one signal. Every call gets a context of its own: a client
// context carries per-call state and is not for concurrent calls.
func (p *peer) signal(stop context.Context, req *parleyv1.SignalRequest) error {
	ctx, cancel := context.WithTimeout(p.who.ctx(), 5*time.Second)
	defer cancel()
	defer context.AfterFunc(stop, cancel)()
	_, err := p.calls.Signal(ctx, req)
	return err
}

func (p *peer) receivedFrom(userID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received[userID]
}

// receivedSource returns the packets received on the track userID publishes
// from src, as its TrackPublished announced it.
func (p *peer) receivedSource(userID string, src parleyv1.TrackSource) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bySource[userID+"/"+src.String()]
}

func (p *peer) close() {
	p.cancel()
	_ = p.pc.GracefulClose()
	p.wg.Wait()
}

func TestCallSignalsCarryMediaBetweenPeers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.RTC = rtc.Config{Loopback: true, UDPAddr: "127.0.0.1:0"} })
	calls := e.calls()
	alice, bob, conv := e.pair("alice", "bob")
	call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)

	// Only a joined participant signals.
	early, err := calls.Signals(bob.ctx(), &parleyv1.SignalsRequest{CallId: call.GetId()})
	if err == nil {
		if early.Receive() {
			t.Fatalf("bob, still rung, got %v", early.Msg())
		}
		err = early.Err()
		early.Close()
	}
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = calls.Signal(bob.ctx(), &parleyv1.SignalRequest{CallId: call.GetId(), Signal: &parleyv1.SignalRequest_RestartIce{RestartIce: &parleyv1.RestartIce{}}})
	wantCode(t, err, connect.CodeFailedPrecondition)

	a := newPeer(t, calls, alice, call.GetId())
	if a.first.GetId() != call.GetId() {
		t.Fatalf("first Signals message %v; want the call", a.first)
	}
	if _, err := calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	b := newPeer(t, calls, bob, call.GetId())
	deadline := time.Now().Add(15 * time.Second)
	for a.receivedFrom(bob.user.GetId()) < 10 || b.receivedFrom(alice.user.GetId()) < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("alice got %d packets from bob, bob %d from alice; want each the other's audio",
				a.receivedFrom(bob.user.GetId()), b.receivedFrom(alice.user.GetId()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := calls.HangUp(alice.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	// The call's end ends both Signals streams.
	for _, p := range []*peer{a, b} {
		select {
		case <-p.ended:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s's Signals stream is still open after the call ended", p.who.user.GetUsername())
		}
	}
}

func TestCallParticipantWhoseSignalsDropLeavesAfterTheGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) {
		c.RTC = rtc.Config{Loopback: true, UDPAddr: "127.0.0.1:0"}
		c.SignalsGrace = 300 * time.Millisecond
	})
	calls := e.calls()
	alice, bob, conv := e.pair("alice", "bob")
	call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	if _, err := calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	// Bob's stream drops and comes back within the grace: he stays.
	newPeer(t, calls, bob, call.GetId()).close()
	newPeer(t, calls, bob, call.GetId())
	a := newPeer(t, calls, alice, call.GetId())
	time.Sleep(500 * time.Millisecond)
	res, err := calls.GetCall(alice.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	if err != nil || res.GetCall().GetState() != parleyv1.CallState_CALL_STATE_ACTIVE {
		t.Fatalf("after bob reopened Signals: %v, %v; want the call active", res.GetCall(), err)
	}
	// Alice's drops for good: after the grace she has left, which ends the call.
	a.close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := calls.GetCall(bob.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.GetCall(); got.GetState() == parleyv1.CallState_CALL_STATE_ENDED {
			if got.GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED ||
				participantState(got, alice.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT {
				t.Errorf("ended call %v; want completed with alice left", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the call is still on after alice's stream dropped")
		}
	}
	wantCallEnded(t, e, bob, conv, call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED)
}
