package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// The SFU workload's fixed parameters.
const (
	// sfuLossLimit is the loss (fraction of the packets sent in a step that a
	// subscriber never received) under which a step counts as sustained.
	sfuLossLimit = 0.005
	// sfuMaxSubscribers is what a video call admits besides the publisher.
	sfuMaxSubscribers = 15
	// sfuMaxSteps bounds the ramp and the bisection.
	sfuMaxSteps = 20
	// After each step's window the sender pauses until the subscribers have
	// received nothing more for sfuQuiet (at most sfuMaxDrain), so packets
	// queued on the way and retransmissions arrive before counting, and the
	// next step starts with empty queues.
	sfuQuiet    = 300 * time.Millisecond
	sfuMaxDrain = 5 * time.Second
	// sfuPrimeRate is the publisher's packets/s until every subscriber
	// receives its video.
	sfuPrimeRate = 50
	// sfuConnectTimeout bounds the time until every subscriber receives.
	sfuConnectTimeout = 30 * time.Second
)

// sfuReport is the outcome of the SFU workload: one publisher's synthetic
// video forwarded by the server's SFU to N subscribers, at packet rates that
// double every step until the loss reaches the limit, then bisected.
type sfuReport struct {
	Workload     string    `json:"workload"`
	Subscribers  int       `json:"subscribers"`
	Media        string    `json:"media"`
	PayloadBytes int       `json:"payload_bytes"`
	Step         string    `json:"step"`
	Warmup       string    `json:"warmup"`
	LossLimitPct float64   `json:"loss_limit_pct"`
	Steps        []sfuStep `json:"steps"`
	// The best step is the one with the highest forwarded rate whose loss
	// stayed under the limit.
	BestForwarded       float64 `json:"best_forwarded_per_s"`
	BestPublisherRate   float64 `json:"best_publisher_rate_per_s"`
	BestCPUPerPacketUs  float64 `json:"best_server_cpu_us_per_packet"`
	BestPacketsPerCoreS float64 `json:"best_packets_per_core_s"`
	SignalErrors        int     `json:"signal_errors"`
	FirstError          string  `json:"first_error,omitempty"`
}

// sfuStep is one publisher rate, measured over the step less its warm-up.
type sfuStep struct {
	// Rate is the publisher's target packets/s; Sent what it sent in the
	// window, PublisherRate the same per second. Again marks the second run
	// of a rate whose first lost too much.
	Rate          float64 `json:"rate_per_s"`
	Again         bool    `json:"again,omitempty"`
	Sent          int64   `json:"sent"`
	PublisherRate float64 `json:"publisher_rate_per_s"`
	// Expected is Sent × subscribers; Received the distinct packets of the
	// window the subscribers got; Lost the rest.
	Expected int64   `json:"expected"`
	Received int64   `json:"received"`
	Lost     int64   `json:"lost"`
	LossPct  float64 `json:"loss_pct"`
	// LateMs is how long after the window the last of its packets arrived
	// (polled every 50 ms; more than that when queues built up).
	LateMs float64 `json:"late_ms"`
	// Forwarded is Received per second of the window and LateMs.
	Forwarded float64 `json:"forwarded_per_s"`
	// ServerCPU is the growth of the server's process_cpu_seconds_total
	// from the start of the window until its last packet arrived;
	// ServerCores the same per second.
	ServerCPU   float64 `json:"server_cpu_s"`
	ServerCores float64 `json:"server_cores"`
	// CPUPerPacketUs is ServerCPU per received packet; PacketsPerCoreS its
	// inverse: forwarded packets per second of one core.
	CPUPerPacketUs  float64 `json:"server_cpu_us_per_packet"`
	PacketsPerCoreS float64 `json:"packets_per_core_s"`
	// BenchCPU is this process's CPU time (the bots) over the same time, and
	// UDPDrops the UDP datagrams this host dropped for full receive buffers
	// (both 0 where /proc does not tell).
	BenchCPU   float64 `json:"bench_cpu_s"`
	BenchCores float64 `json:"bench_cores"`
	UDPDrops   int64   `json:"udp_rcvbuf_drops"`
}

func (s sfuStep) within() bool { return s.Sent > 0 && s.LossPct < sfuLossLimit*100 }

func runSFU(ctx context.Context, cl *benchClient, cfg benchConfig) (*sfuReport, error) {
	call, err := setupSFU(ctx, cl, cfg)
	if call != nil {
		defer call.close()
	}
	if err != nil {
		return nil, err
	}
	warmup := min(time.Second, cfg.step/4)
	rep := &sfuReport{
		Workload: "sfu", Subscribers: cfg.subscribers, Media: "video/VP8", PayloadBytes: cfg.payload,
		Step: cfg.step.String(), Warmup: warmup.String(), LossLimitPct: sfuLossLimit * 100,
	}
	// within runs a rate and reports whether it kept the loss under the
	// limit. A rate that did not is run once more: on a machine shared with
	// other work, one stall of the bots can lose a step's packets.
	within := func(rate float64) (bool, error) {
		s, err := call.run(ctx, cl, rate, warmup, cfg.step-warmup)
		if err != nil {
			return false, err
		}
		rep.Steps = append(rep.Steps, s)
		if !s.within() && len(rep.Steps) < sfuMaxSteps {
			if s, err = call.run(ctx, cl, rate, warmup, cfg.step-warmup); err != nil {
				return false, err
			}
			s.Again = true
			rep.Steps = append(rep.Steps, s)
		}
		if !s.within() {
			return false, nil
		}
		if s.Forwarded > rep.BestForwarded {
			rep.BestForwarded, rep.BestPublisherRate = s.Forwarded, s.PublisherRate
			rep.BestCPUPerPacketUs, rep.BestPacketsPerCoreS = s.CPUPerPacketUs, s.PacketsPerCoreS
		}
		return true, nil
	}
	// Double until a step loses too much, then bisect between the last good
	// rate and the failed one down to an eighth of the good one.
	good, bad := 0.0, 0.0
	for rate := cfg.rate; rate <= cfg.maxRate && len(rep.Steps) < sfuMaxSteps; rate *= 2 {
		ok, err := within(rate)
		if err != nil {
			return nil, err
		}
		if !ok {
			bad = rate
			break
		}
		good = rate
	}
	for good > 0 && bad > 0 && bad-good > good/8 && len(rep.Steps) < sfuMaxSteps && ctx.Err() == nil {
		mid := math.Round((good + bad) / 2)
		ok, err := within(mid)
		if err != nil {
			return nil, err
		}
		if ok {
			good = mid
		} else {
			bad = mid
		}
	}
	rep.SignalErrors, rep.FirstError = call.signalErrors()
	return rep, nil
}

// sfuCall is the call the workload runs: a publisher bot and its subscribers.
type sfuCall struct {
	pub  *sfuBot
	subs []*sfuBot
	send *sfuSender
	stop context.CancelFunc // stops the sender
	done chan struct{}      // the sender stopped
}

// setupSFU registers the publisher and subscribers, puts them in a group (a
// direct conversation for one subscriber), has the publisher start a video
// call and the others answer it, joins every bot through Signals, and sends
// until every subscriber receives the publisher's video.
func setupSFU(ctx context.Context, cl *benchClient, cfg benchConfig) (*sfuCall, error) {
	users, err := cl.newUsers(ctx, "sfu", cfg.subscribers+1, cfg.setup)
	if err != nil {
		return nil, err
	}
	convID, err := sfuConversation(ctx, cl, users, cfg.setup)
	if err != nil {
		return nil, err
	}
	pub := users[0]
	started, err := cl.calls.StartCall(pub.authed(ctx), &parleyv1.StartCallRequest{ConversationId: convID, Kind: parleyv1.CallKind_CALL_KIND_VIDEO})
	if err != nil {
		return nil, limitError("start call", err)
	}
	callID := started.GetCall().GetId()
	err = forEach(cfg.subscribers, cfg.setup, func(i int) error {
		if _, err := cl.calls.AnswerCall(users[i+1].authed(ctx), &parleyv1.AnswerCallRequest{CallId: callID}); err != nil {
			return fmt.Errorf("answer call as %s: %w", users[i+1].name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	call := &sfuCall{done: make(chan struct{})}
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "camera", pub.id)
	if err != nil {
		return nil, fmt.Errorf("publisher track: %w", err)
	}
	if call.pub, err = newSFUBot(ctx, cl, pub, callID, track); err != nil {
		return nil, err
	}
	for _, u := range users[1:] {
		b, err := newSFUBot(ctx, cl, u, callID, nil)
		if err != nil {
			return call, err
		}
		call.subs = append(call.subs, b)
	}
	call.send = &sfuSender{track: track, payload: cfg.payload}
	sctx, stop := context.WithCancel(ctx)
	call.stop = stop
	go func() {
		defer close(call.done)
		call.send.run(sctx)
	}()
	call.send.setRate(sfuPrimeRate)
	ok := waitUntil(ctx, sfuConnectTimeout, func() bool {
		for _, b := range call.subs {
			if !b.seqs.any() {
				return false
			}
		}
		return true
	})
	call.send.setRate(0)
	if !ok {
		n := 0
		for _, b := range call.subs {
			if b.seqs.any() {
				n++
			}
		}
		errs, first := call.signalErrors()
		return call, fmt.Errorf("%d of %d subscribers receive the publisher's video after %v (signal errors %d: %s)",
			n, len(call.subs), sfuConnectTimeout, errs, first)
	}
	return call, nil
}

// sfuConversation puts the users in one conversation: a direct one for two,
// otherwise a group the first creates and the others join by invite.
func sfuConversation(ctx context.Context, cl *benchClient, users []benchUser, concurrency int) (string, error) {
	owner := users[0]
	if len(users) == 2 {
		return cl.directConversation(ctx, owner, users[1])
	}
	created, err := cl.groups.CreateGroup(owner.authed(ctx), &parleyv1.CreateGroupRequest{Name: "bench " + cl.prefix})
	if err != nil {
		return "", fmt.Errorf("create group: %w", err)
	}
	convID := created.GetGroup().GetConversationId()
	inv, err := cl.groups.CreateInviteLink(owner.authed(ctx), &parleyv1.CreateInviteLinkRequest{GroupId: convID})
	if err != nil {
		return "", fmt.Errorf("create invite link: %w", err)
	}
	err = forEach(len(users)-1, concurrency, func(i int) error {
		if _, err := cl.groups.JoinByInvite(users[i+1].authed(ctx), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()}); err != nil {
			return fmt.Errorf("join the group: %w", err)
		}
		return nil
	})
	return convID, err
}

// run sends at rate for warmup, then for window, measuring the window: what
// the subscribers received of it and the server's CPU time meanwhile.
func (c *sfuCall) run(ctx context.Context, cl *benchClient, rate float64, warmup, window time.Duration) (sfuStep, error) {
	s := sfuStep{Rate: rate}
	c.send.setRate(rate)
	defer c.send.setRate(0)
	select {
	case <-time.After(warmup):
	case <-ctx.Done():
		return s, ctx.Err()
	}
	cpu0, err := cl.serverCPU(ctx)
	if err != nil {
		return s, err
	}
	bench0, drops0 := selfCPU(), udpRcvbufErrors()
	from, t0 := c.send.next.Load(), time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return s, ctx.Err()
	}
	to, elapsed := c.send.next.Load(), time.Since(t0)
	c.send.setRate(0)
	received := func() int64 {
		var n int64
		for _, b := range c.subs {
			n += b.seqs.count(from, to)
		}
		return n
	}
	end := time.Now()
	last, lastAt := received(), end
	for time.Since(lastAt) < sfuQuiet && time.Since(end) < sfuMaxDrain && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		if n := received(); n != last {
			last, lastAt = n, time.Now()
		}
	}
	// The server's work for the window ends when the last of it arrives.
	cpu1, err := cl.serverCPU(ctx)
	if err != nil {
		return s, err
	}
	s.BenchCPU, s.UDPDrops = selfCPU()-bench0, udpRcvbufErrors()-drops0
	s.LateMs = ms(lastAt.Sub(end))
	busy := elapsed + lastAt.Sub(end)

	s.Sent = int64(to - from)
	s.PublisherRate = float64(s.Sent) / elapsed.Seconds()
	s.Expected = s.Sent * int64(len(c.subs))
	s.Received = last
	s.Lost = s.Expected - s.Received
	if s.Expected > 0 {
		s.LossPct = 100 * float64(s.Lost) / float64(s.Expected)
	}
	s.Forwarded = float64(s.Received) / busy.Seconds()
	s.ServerCPU = cpu1 - cpu0
	s.ServerCores = s.ServerCPU / busy.Seconds()
	s.BenchCores = s.BenchCPU / busy.Seconds()
	if s.Received > 0 && s.ServerCPU > 0 {
		s.CPUPerPacketUs = s.ServerCPU / float64(s.Received) * 1e6
		s.PacketsPerCoreS = float64(s.Received) / s.ServerCPU
	}
	return s, nil
}

func (c *sfuCall) signalErrors() (int, string) {
	n, first := 0, ""
	for _, b := range append([]*sfuBot{c.pub}, c.subs...) {
		if b == nil {
			continue
		}
		b.mu.Lock()
		n += b.errs
		first = firstOf(first, b.firstErr)
		b.mu.Unlock()
	}
	return n, first
}

// close stops the sender and has every bot hang up and close.
func (c *sfuCall) close() {
	if c.stop != nil {
		c.stop()
		<-c.done
	}
	var wg sync.WaitGroup
	for _, b := range append(c.subs, c.pub) {
		if b != nil {
			wg.Go(b.close)
		}
	}
	wg.Wait()
}

// sfuSender is the publisher's camera: synthetic VP8 RTP packets at a rate
// that can change while it runs, numbered by an extended sequence number
// whose low 16 bits are the packets' sequence numbers.
type sfuSender struct {
	track   *webrtc.TrackLocalStaticRTP
	payload int
	rate    atomic.Uint64 // math.Float64bits of packets/s; 0: paused
	next    atomic.Uint64 // extended sequence number of the next packet
}

func (s *sfuSender) setRate(r float64) { s.rate.Store(math.Float64bits(r)) }

// run sends until ctx is done. Packets are paced every millisecond (or
// every packet, at low rates) from the time the rate last changed; a sender
// that falls behind catches up, and the step counts what it really sent.
func (s *sfuSender) run(ctx context.Context) {
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96}, Payload: make([]byte, s.payload)}
	for i := range pkt.Payload {
		pkt.Payload[i] = byte(rand.Uint32())
	}
	start := time.Now()
	var (
		rate   float64
		base   time.Time
		atBase uint64
	)
	for ctx.Err() == nil {
		now := time.Now()
		if r := math.Float64frombits(s.rate.Load()); r != rate {
			rate, base, atBase = r, now, s.next.Load()
		}
		if rate == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		due := atBase + uint64(rate*now.Sub(base).Seconds())
		for n := s.next.Load(); n < due; n++ {
			// 30 frames a second; a VP8 payload descriptor with S set
			// starts each packet, as if every packet began a partition.
			at := now.Sub(start)
			pkt.SequenceNumber = uint16(n)
			pkt.Timestamp = uint32(at * 30 / time.Second * 3000)
			pkt.Payload[0] = 0x10
			_ = s.track.WriteRTP(pkt) // an unbound track drops it
			s.next.Store(n + 1)
		}
		time.Sleep(max(time.Millisecond, time.Duration(float64(time.Second)/rate)-time.Since(now)))
	}
}

// sfuBot is one call participant's client: a Pion peer connection that
// answers the server's offers from its Signals stream. The publisher sends
// its track on the camera slot; a subscriber records the sequence numbers of
// the packets it receives.
type sfuBot struct {
	user   benchUser
	cl     *benchClient
	callID string
	api    *webrtc.API
	mux    io.Closer // the bot's UDP socket
	pc     *webrtc.PeerConnection
	track  *webrtc.TrackLocalStaticRTP // the publisher's; nil for a subscriber
	seqs   sfuSeqs
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	attached bool
	pending  []webrtc.ICECandidateInit // the server's, before its offer
	errs     int
	firstErr string
}

// sfuBotAPI builds a bot's WebRTC API. Like a browser, a bot negotiates
// NACK, RTCP reports and transport-wide congestion control, so the server
// does the work a real call makes it do. Its media go through one UDP socket
// of its own with a large receive buffer, so that what a subscriber loses is
// the server's doing more than the bench's scheduling.
func sfuBotAPI() (*webrtc.API, io.Closer, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, nil, fmt.Errorf("bot codecs: %w", err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		return nil, nil, fmt.Errorf("bot interceptors: %w", err)
	}
	var se webrtc.SettingEngine
	quiet := logging.NewDefaultLoggerFactory()
	quiet.DefaultLogLevel = logging.LogLevelDisabled
	se.LoggerFactory = quiet
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	// A bot on the server's machine may have no address but loopback (a
	// fresh container, CI in a network namespace); elsewhere the loopback
	// candidate is one more pair ICE tries and drops.
	se.SetIncludeLoopbackCandidate(true)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		return nil, nil, fmt.Errorf("bot socket: %w", err)
	}
	_ = conn.SetReadBuffer(4 << 20) // capped at net.core.rmem_max
	mux := webrtc.NewICEUDPMux(quiet.NewLogger("udpmux"), conn)
	se.SetICEUDPMux(mux)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), mux, nil
}

func newSFUBot(ctx context.Context, cl *benchClient, u benchUser, callID string, track *webrtc.TrackLocalStaticRTP) (*sfuBot, error) {
	api, mux, err := sfuBotAPI()
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		_ = mux.Close()
		return nil, fmt.Errorf("peer connection for %s: %w", u.name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	b := &sfuBot{user: u, cl: cl, callID: callID, api: api, mux: mux, pc: pc, track: track, cancel: cancel}
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
		b.signal(ctx, &parleyv1.SignalRequest{CallId: callID, Signal: &parleyv1.SignalRequest_Candidate{Candidate: cand}})
	})
	if track == nil {
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			buf := make([]byte, 1500)
			for {
				n, _, err := tr.Read(buf)
				if err != nil {
					return
				}
				if n >= 4 {
					b.seqs.add(binary.BigEndian.Uint16(buf[2:4]))
				}
			}
		})
	}
	stream, err := cl.calls.Signals(u.authed(ctx), &parleyv1.SignalsRequest{CallId: callID})
	if err == nil && !stream.Receive() {
		err = stream.Err()
		if err == nil {
			err = errors.New("the stream ended at once")
		}
	}
	if err != nil {
		cancel()
		_ = pc.Close()
		_ = mux.Close()
		return nil, fmt.Errorf("Signals as %s: %w", u.name, err)
	}
	b.wg.Go(func() {
		defer stream.Close()
		for stream.Receive() {
			b.handle(ctx, stream.Msg())
		}
	})
	return b, nil
}

func (b *sfuBot) handle(ctx context.Context, m *parleyv1.SignalsResponse) {
	switch {
	case m.GetOffer() != nil:
		o := m.GetOffer()
		if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: o.GetSdp()}); err != nil {
			b.fail(fmt.Errorf("set offer: %w", err))
			return
		}
		if err := b.attach(o.GetSendMids()); err != nil {
			b.fail(err)
			return
		}
		b.mu.Lock()
		pending := b.pending
		b.pending = nil
		b.mu.Unlock()
		for _, c := range pending {
			if err := b.pc.AddICECandidate(c); err != nil {
				b.fail(fmt.Errorf("add candidate: %w", err))
			}
		}
		answer, err := b.pc.CreateAnswer(nil)
		if err == nil {
			err = b.pc.SetLocalDescription(answer)
		}
		if err != nil {
			b.fail(fmt.Errorf("answer: %w", err))
			return
		}
		b.signal(ctx, &parleyv1.SignalRequest{CallId: b.callID, Signal: &parleyv1.SignalRequest_Answer{Answer: &parleyv1.SdpAnswer{Sdp: answer.SDP, Revision: o.GetRevision()}}})
	case m.GetCandidate() != nil:
		c := m.GetCandidate()
		init := webrtc.ICECandidateInit{Candidate: c.GetCandidate(), SDPMid: c.SdpMid}
		if c.SdpMlineIndex != nil {
			i := uint16(c.GetSdpMlineIndex())
			init.SDPMLineIndex = &i
		}
		switch {
		case init.Candidate == "":
		case b.pc.RemoteDescription() == nil:
			// The server gathers as it sets its offer, so candidates may
			// come first.
			b.mu.Lock()
			b.pending = append(b.pending, init)
			b.mu.Unlock()
		default:
			if err := b.pc.AddICECandidate(init); err != nil {
				b.fail(fmt.Errorf("add candidate: %w", err))
			}
		}
	}
}

// attach puts the publisher's track on the camera slot of an offer, once,
// and reads the slot's RTCP, which the interceptors need to answer NACKs.
func (b *sfuBot) attach(sendMIDs map[string]parleyv1.TrackSource) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.track == nil || b.attached {
		return nil
	}
	for mid, src := range sendMIDs {
		if src != parleyv1.TrackSource_TRACK_SOURCE_CAMERA {
			continue
		}
		for _, tr := range b.pc.GetTransceivers() {
			if tr.Mid() != mid {
				continue
			}
			sender, err := b.api.NewRTPSender(b.track, b.pc.SCTP().Transport())
			if err == nil {
				err = tr.SetSender(sender, b.track)
			}
			if err != nil {
				return fmt.Errorf("attach the camera: %w", err)
			}
			b.attached = true
			b.wg.Go(func() {
				buf := make([]byte, 1500)
				for {
					if _, _, err := sender.Read(buf); err != nil {
						return
					}
				}
			})
			return nil
		}
	}
	return nil
}

// signal sends one signal; every call gets a context of its own, since a
// client context carries per-call state.
func (b *sfuBot) signal(stop context.Context, req *parleyv1.SignalRequest) {
	ctx, cancel := context.WithTimeout(b.user.authed(context.WithoutCancel(stop)), 10*time.Second)
	defer cancel()
	defer context.AfterFunc(stop, cancel)()
	if _, err := b.cl.calls.Signal(ctx, req); err != nil && stop.Err() == nil {
		b.fail(fmt.Errorf("Signal: %w", err))
	}
}

func (b *sfuBot) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs++
	b.firstErr = firstOf(b.firstErr, b.user.name+": "+err.Error())
}

// close hangs up, ends the Signals stream and closes the connection.
func (b *sfuBot) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = b.cl.calls.HangUp(b.user.authed(ctx), &parleyv1.HangUpRequest{CallId: b.callID})
	b.cancel()
	_ = b.pc.Close()
	b.wg.Wait()
	_ = b.mux.Close()
}

// sfuSeqs is the set of packets a subscriber received, by extended sequence
// number: a bit each, unwrapped from the 16-bit sequence numbers relative to
// the highest so far. The first packet must be among the first 65,536 sent.
type sfuSeqs struct {
	mu      sync.Mutex
	started bool
	highest uint64
	bits    []uint64
}

func (s *sfuSeqs) add(seq uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ext := int64(seq)
	if s.started {
		ext = int64(s.highest) + int64(int16(seq-uint16(s.highest)))
	}
	if ext < 0 {
		return
	}
	u := uint64(ext)
	if !s.started || u > s.highest {
		s.started, s.highest = true, u
	}
	w := int(u / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w+1-len(s.bits)+len(s.bits)/2)...)
	}
	s.bits[w] |= 1 << (u % 64)
}

func (s *sfuSeqs) any() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// count returns how many packets in [from, to) were received.
func (s *sfuSeqs) count(from, to uint64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for u := from; u < to; u++ {
		if w := int(u / 64); w < len(s.bits) && s.bits[w]&(1<<(u%64)) != 0 {
			n++
		}
	}
	return n
}

// serverCPU reads process_cpu_seconds_total from the server's /metrics.
func (c *benchClient) serverCPU(ctx context.Context) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.target+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	res, err := (&http.Client{Transport: c.tr}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("read the server's CPU time: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read the server's CPU time: GET /metrics: %s", res.Status)
	}
	const name = "process_cpu_seconds_total "
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read the server's CPU time: %w", err)
	}
	return 0, errors.New("the server's /metrics has no process_cpu_seconds_total (it is reported on Linux)")
}

// selfCPU returns this process's user and system CPU seconds from
// /proc/self/stat (in clock ticks of 1/100 s), or 0 where there is none.
func selfCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// The fields after the command, which is in parentheses, start with the
	// state (field 3); utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return (ut + st) / 100
}

// udpRcvbufErrors returns the host's count of UDP datagrams dropped for a
// full receive buffer (RcvbufErrors in /proc/net/snmp), or 0.
func udpRcvbufErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

func (r *sfuReport) table(w io.Writer) {
	fmt.Fprintf(w, "SFU: 1 publisher → %d subscribers, %s with %d-byte payloads, %s per step (%s warm-up), doubling until loss ≥ %.1f %%, then bisecting\n",
		r.Subscribers, r.Media, r.PayloadBytes, r.Step, r.Warmup, r.LossLimitPct)
	fmt.Fprintf(w, "  %9s %9s %10s %8s %8s %8s %9s %12s %8s %9s\n", "target/s", "sent/s", "fwd pkt/s", "loss %", "late ms", "srv CPU", "µs/pkt", "pkt/s/core", "bench", "UDP drop")
	retried := false
	for _, s := range r.Steps {
		again := " "
		if s.Again {
			again, retried = "*", true
		}
		fmt.Fprintf(w, "  %s%8.0f %9.0f %10.0f %8.3f %8.0f %7.0f%% %9.2f %12.0f %7.0f%% %9d\n",
			again, s.Rate, s.PublisherRate, s.Forwarded, s.LossPct, s.LateMs, 100*s.ServerCores, s.CPUPerPacketUs, s.PacketsPerCoreS,
			100*s.BenchCores, s.UDPDrops)
	}
	if retried {
		fmt.Fprintf(w, "  (* the second run of a rate whose first lost too much)\n")
	}
	fmt.Fprintf(w, "  highest forwarded rate with loss < %.1f %%: %.0f packets/s (publisher %.0f/s), %.2f µs of server CPU per packet, %.0f packets/s per core\n",
		r.LossLimitPct, r.BestForwarded, r.BestPublisherRate, r.BestCPUPerPacketUs, r.BestPacketsPerCoreS)
	if r.SignalErrors > 0 {
		fmt.Fprintf(w, "  signal errors %d: %s\n", r.SignalErrors, r.FirstError)
	}
}
