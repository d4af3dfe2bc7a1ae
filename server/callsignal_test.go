package server_test

import (
	"context"
	"sync"
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
// the server's offers from its Signals stream, sends synthetic Opus RTP on
// the microphone slot and counts the packets it receives per publisher.
type peer struct {
	t      testing.TB
	calls  parleyv1connect.CallsServiceClient
	who    account
	callID string
	api    *webrtc.API
	pc     *webrtc.PeerConnection
	mic    *webrtc.TrackLocalStaticRTP
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ended  chan struct{} // the Signals stream ended

	mu       sync.Mutex
	attached bool
	received map[string]int // RTP packets by the publisher's stream id
	first    *parleyv1.Call // the stream's first message
}

func newPeer(t testing.TB, calls parleyv1connect.CallsServiceClient, who account, callID string) *peer {
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
	mic, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", who.user.GetId())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(who.ctx(), 30*time.Second)
	p := &peer{t: t, calls: calls, who: who, callID: callID, api: api, pc: pc, mic: mic, cancel: cancel, received: map[string]int{}, ended: make(chan struct{})}
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
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer close(p.ended)
		defer stream.Close()
		for stream.Receive() {
			p.handle(ctx, stream.Msg())
		}
	}()
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111}, Payload: make([]byte, 100)}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pkt.SequenceNumber++
			pkt.Timestamp += 480
			_ = mic.WriteRTP(pkt)
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *peer) handle(ctx context.Context, m *parleyv1.SignalsResponse) {
	switch {
	case m.GetOffer() != nil:
		o := m.GetOffer()
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.GetSdp()}); err != nil {
			p.t.Errorf("set offer: %v", err)
			return
		}
		for mid, src := range o.GetSendMids() {
			if src != parleyv1.TrackSource_TRACK_SOURCE_MICROPHONE || p.attached {
				continue
			}
			for _, tr := range p.pc.GetTransceivers() {
				if tr.Mid() != mid {
					continue
				}
				sender, err := p.api.NewRTPSender(p.mic, p.pc.SCTP().Transport())
				if err == nil {
					err = tr.SetSender(sender, p.mic)
				}
				if err != nil {
					p.t.Errorf("attach the microphone: %v", err)
					return
				}
				p.attached = true
			}
		}
		answer, err := p.pc.CreateAnswer(nil)
		if err == nil {
			err = p.pc.SetLocalDescription(answer)
		}
		if err != nil {
			p.t.Errorf("answer: %v", err)
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
