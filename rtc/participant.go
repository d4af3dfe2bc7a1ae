package rtc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// republishGrace is how long after Unpublish packets on the slot are dropped
// rather than taken as the source being published again: packets in flight
// when the client stopped must not bring the track back.
const republishGrace = 500 * time.Millisecond

// receiveMTU is the largest RTP packet read from a publisher (Pion's default).
const receiveMTU = 1460

// maxPendingCandidates bounds the candidates kept until an answer arrives.
const maxPendingCandidates = 64

// Participant is one member of a room with its PeerConnection to the server.
// Its methods take what the client sends: answers, ICE candidates, mute
// changes and unpublishes. They are safe for concurrent use.
type Participant struct {
	id   string
	room *Room
	log  *slog.Logger
	pc   *webrtc.PeerConnection
	// slots are the transceivers the participant sends on, fixed at Join.
	slots []*slot

	events events
	cands  candidateGate

	// mu guards the negotiation state below and is held across the signaling
	// calls into the PeerConnection, so offers and answers alternate.
	mu            sync.Mutex
	closed        bool
	revision      int64
	offerPending  bool // an offer awaits its answer
	restarting    bool // ... and it restarts ICE
	needOffer     bool // something changed while an offer was pending
	iceRestart    bool // the next offer restarts ICE
	candidates    []webrtc.ICECandidateInit
	subs          map[*publication]*subscription
	unannounced   []*subscription // added since the last offer
	inOffer       []*subscription // announced with the pending offer
	lastOffer     Offer
	muted         map[Source]bool
	unpublishedAt map[Source]time.Time

	gmu     sync.Mutex // guards gclosed and wg.Add
	gclosed bool
	wg      sync.WaitGroup // the participant's goroutines, except events
	done    chan struct{}  // closed when the participant closes
	state   chan struct{}  // the connection state changed
}

// slot is a receive transceiver offered for one source.
type slot struct {
	source Source
	tr     *webrtc.RTPTransceiver
	pub    atomic.Pointer[publication] // what the slot publishes now
}

// subscription is a publication forwarded to this participant.
type subscription struct {
	pub    *publication
	tr     *webrtc.RTPTransceiver
	sender *webrtc.RTPSender
	mid    string
}

func (sub *subscription) track() Track {
	return Track{
		ParticipantID: sub.pub.publisher.id,
		Source:        sub.pub.source,
		MID:           sub.mid,
		TrackID:       sub.pub.local.ID(),
		StreamID:      sub.pub.local.StreamID(),
		Muted:         sub.pub.muted.Load(),
	}
}

func newParticipant(r *Room, id string, sig Signaler) (*Participant, error) {
	pc, err := r.sfu.api.NewPeerConnection(webrtc.Configuration{ICEServers: r.sfu.cfg.ICEServers})
	if err != nil {
		return nil, fmt.Errorf("rtc: new peer connection: %w", err)
	}
	p := &Participant{
		id:            id,
		room:          r,
		log:           r.log.With("participant_id", id),
		pc:            pc,
		events:        events{wake: make(chan struct{}, 1), stop: make(chan closing, 1)},
		subs:          make(map[*publication]*subscription),
		muted:         make(map[Source]bool),
		unpublishedAt: make(map[Source]time.Time),
		done:          make(chan struct{}),
		state:         make(chan struct{}, 1),
	}
	sources := []Source{SourceMicrophone, SourceCamera, SourceScreen}
	if r.opts.AudioOnly {
		sources = sources[:1]
	}
	for _, src := range sources {
		tr, err := pc.AddTransceiverFromKind(src.kind(), webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
		if err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("rtc: add %s slot: %w", src, err)
		}
		p.slots = append(p.slots, &slot{source: src, tr: tr})
	}

	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		init := webrtc.ICECandidateInit{}
		if c != nil {
			init = c.ToJSON()
		}
		p.cands.send(p, init)
	})
	pc.OnConnectionStateChange(func(webrtc.PeerConnectionState) {
		select {
		case p.state <- struct{}{}:
		default:
		}
	})
	pc.OnTrack(func(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		for _, sl := range p.slots {
			if sl.tr.Receiver() == recv {
				p.goroutine(func() { p.forward(sl, remote) })
				return
			}
		}
	})

	if !r.sfu.goroutine(func() { p.events.run(sig) }) {
		_ = pc.Close()
		return nil, ErrClosed
	}
	p.goroutine(p.watch)
	return p, nil
}

// ID returns the participant's id.
func (p *Participant) ID() string { return p.id }

// Answer applies the client's answer to the offer with the given revision.
// It returns ErrStaleAnswer when that offer is not the outstanding one and
// ErrInvalidSignal when the SDP cannot be applied (the offer stays
// outstanding).
func (p *Participant) Answer(revision int64, sdp string) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrLeft
	}
	if !p.offerPending || revision != p.revision {
		p.mu.Unlock()
		return ErrStaleAnswer
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		p.mu.Unlock()
		return fmt.Errorf("%w: answer: %v", ErrInvalidSignal, err)
	}
	p.offerPending, p.restarting = false, false
	for _, c := range p.candidates {
		if err := p.pc.AddICECandidate(c); err != nil {
			p.log.Debug("rtc: early candidate", "err", err)
		}
	}
	p.candidates = nil
	added := p.inOffer
	p.inOffer = nil
	if p.needOffer || p.iceRestart {
		p.negotiateLocked()
	}
	p.mu.Unlock()

	// The new subscribers' senders are bound now: ask for keyframes.
	for _, sub := range added {
		sub.pub.keyframe(true)
	}
	return nil
}

// AddCandidate adds one of the client's ICE candidates; an empty Candidate
// marks the end of them. Candidates that arrive before the answer they belong
// to are kept until it does.
func (p *Participant) AddCandidate(c webrtc.ICECandidateInit) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrLeft
	}
	if p.pc.RemoteDescription() == nil || p.restarting {
		if len(p.candidates) >= maxPendingCandidates {
			return fmt.Errorf("%w: too many candidates before the answer", ErrInvalidSignal)
		}
		p.candidates = append(p.candidates, c)
		return nil
	}
	if err := p.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("%w: candidate: %v", ErrInvalidSignal, err)
	}
	return nil
}

// SetMuted records that the client muted or unmuted a source and tells the
// others. The media keeps flowing; muting is the client's to do.
func (p *Participant) SetMuted(source Source, muted bool) error {
	if !source.valid() {
		return fmt.Errorf("%w: source %d", ErrInvalidSignal, source)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrLeft
	}
	p.muted[source] = muted
	if sl := p.slot(source); sl != nil {
		if pub := sl.pub.Load(); pub != nil {
			pub.muted.Store(muted)
		}
	}
	p.mu.Unlock()
	p.room.broadcast(p, func(s Signaler) { s.MuteChanged(p.id, source, muted) })
	return nil
}

// Unpublish stops forwarding a source the client stopped sending, such as a
// shared screen. Sending on the source's slot again (after a short grace)
// publishes it anew.
func (p *Participant) Unpublish(source Source) error {
	if !source.valid() {
		return fmt.Errorf("%w: source %d", ErrInvalidSignal, source)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrLeft
	}
	sl := p.slot(source)
	var pub *publication
	if sl != nil {
		p.unpublishedAt[source] = time.Now()
		pub = sl.pub.Swap(nil)
	}
	p.mu.Unlock()
	if pub != nil {
		p.room.unpublish(pub)
	}
	return nil
}

// RestartICE makes the next offer restart ICE, and sends it now unless an
// offer is outstanding (then it follows the answer).
func (p *Participant) RestartICE() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrLeft
	}
	p.iceRestart = true
	p.negotiateLocked()
	return nil
}

// Resync sends the participant's whole state to its Signaler again, for a
// client that lost its signaling stream and opened a new one:
// ParticipantJoined for everyone else in the room, TrackPublished for every
// track it receives, and the outstanding offer again if there is one (Pion
// cannot roll a local offer back); then an offer that restarts ICE, at once
// or after that answer.
func (p *Participant) Resync() error {
	r := p.room
	r.mu.Lock()
	others := r.othersLocked(p)
	r.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrLeft
	}
	for _, o := range others {
		p.emit(func(s Signaler) { s.ParticipantJoined(o.id) })
	}
	pending := make(map[*subscription]bool, len(p.unannounced))
	for _, sub := range p.unannounced {
		pending[sub] = true
	}
	for _, sub := range p.subs {
		if !pending[sub] {
			t := sub.track()
			p.emit(func(s Signaler) { s.TrackPublished(t) })
		}
	}
	p.iceRestart = true
	if p.offerPending {
		o := p.lastOffer
		p.emit(func(s Signaler) { s.Offer(o) })
		return nil
	}
	p.negotiateLocked()
	return nil
}

// Leave takes the participant out of the room: the others lose its tracks
// and learn it left, its connection closes, and its Signaler gets Closed(nil).
func (p *Participant) Leave() { p.room.leave(p, nil) }

// ConnectionState returns the state of the participant's PeerConnection.
func (p *Participant) ConnectionState() webrtc.PeerConnectionState { return p.pc.ConnectionState() }

func (p *Participant) slot(source Source) *slot {
	for _, sl := range p.slots {
		if sl.source == source {
			return sl
		}
	}
	return nil
}

// negotiateLocked sends an offer with the current tracks, or, while one is
// outstanding, marks that another must follow its answer.
func (p *Participant) negotiateLocked() {
	if p.closed {
		return
	}
	if p.offerPending {
		p.needOffer = true
		return
	}
	// Before the first answer there is no ICE session to restart.
	restart := p.iceRestart && p.pc.CurrentRemoteDescription() != nil
	offer, err := p.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: restart})
	if err == nil {
		p.cands.hold()
		defer p.cands.release(p)
		err = p.pc.SetLocalDescription(offer)
	}
	if err != nil {
		if p.pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
			return // the client closed it; watch takes the participant out
		}
		p.log.Error("rtc: offer", "err", err)
		return
	}
	p.needOffer, p.iceRestart = false, false
	p.revision++
	p.offerPending, p.restarting = true, restart

	for _, sub := range p.unannounced {
		sub.mid = sub.tr.Mid()
		t := sub.track()
		p.emit(func(s Signaler) { s.TrackPublished(t) })
	}
	p.inOffer = append(p.inOffer, p.unannounced...)
	p.unannounced = nil

	o := Offer{SDP: offer.SDP, Revision: p.revision, ICERestart: restart, SendMIDs: make(map[string]Source)}
	for _, sl := range p.slots {
		o.SendMIDs[sl.tr.Mid()] = sl.source
	}
	p.lastOffer = o
	p.emit(func(s Signaler) { s.Offer(o) })
}

// subscribe forwards pub to p.
func (p *Participant) subscribe(pub *publication) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subscribeLocked([]*publication{pub})
	p.negotiateLocked()
}

func (p *Participant) subscribeLocked(pubs []*publication) {
	for _, pub := range pubs {
		if p.closed || pub.closed.Load() || p.subs[pub] != nil {
			continue
		}
		tr, sender, err := p.addSender(pub.local)
		if err != nil {
			p.log.Error("rtc: subscribe", "publisher_id", pub.publisher.id, "source", pub.source, "err", err)
			continue
		}
		sub := &subscription{pub: pub, tr: tr, sender: sender}
		p.subs[pub] = sub
		p.unannounced = append(p.unannounced, sub)
		p.goroutine(func() { p.feedback(sub) })
	}
}

// addSender sends track on a new transceiver of its own. Not
// PeerConnection.AddTrack: it would also take a receive slot, since Pion does
// not record the direction an answer gave the offerer's transceivers. Nor a
// transceiver whose track was removed: Pion, as the answerer, stops the
// receiver of an m-section that went inactive and cannot start it again. So
// m-sections accumulate over a call, as inactive ones after their tracks go.
func (p *Participant) addSender(track webrtc.TrackLocal) (*webrtc.RTPTransceiver, *webrtc.RTPSender, error) {
	tr, err := p.pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return nil, nil, err
	}
	return tr, tr.Sender(), nil
}

// unsubscribe stops forwarding pubs to p.
func (p *Participant) unsubscribe(pubs ...*publication) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for _, pub := range pubs {
		sub := p.subs[pub]
		if sub == nil {
			continue
		}
		delete(p.subs, pub)
		changed = true
		if err := p.pc.RemoveTrack(sub.sender); err != nil && !p.closed {
			p.log.Debug("rtc: remove track", "err", err)
		}
		announced := true
		for i, u := range p.unannounced {
			if u == sub {
				p.unannounced = append(p.unannounced[:i], p.unannounced[i+1:]...)
				announced = false
				break
			}
		}
		if announced {
			t := sub.track()
			p.emit(func(s Signaler) { s.TrackUnpublished(t) })
		}
	}
	if changed {
		p.negotiateLocked()
	}
}

// feedback reads the subscriber's RTCP for sub (which the interceptors need
// for NACKs and reports) and passes keyframe requests to the publisher.
func (p *Participant) feedback(sub *subscription) {
	for {
		pkts, _, err := sub.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				sub.pub.keyframe(false)
			}
		}
	}
}

// forward reads what the client sends on a slot and writes it to the slot's
// publication, publishing the source when media arrives on an idle slot.
func (p *Participant) forward(sl *slot, remote *webrtc.TrackRemote) {
	log := p.log.With("source", sl.source)
	log.Debug("rtc: incoming track", "codec", remote.Codec().MimeType, "ssrc", remote.SSRC())
	defer func() {
		if pub := sl.pub.Swap(nil); pub != nil {
			p.room.unpublish(pub)
		}
	}()
	buf := make([]byte, receiveMTU)
	for {
		n, _, err := remote.Read(buf)
		if err != nil {
			return
		}
		pub := sl.pub.Load()
		if pub == nil {
			if pub = p.publish(sl, remote); pub == nil {
				continue
			}
		}
		// Write rewrites the SSRC and payload type for each subscriber.
		if _, err := pub.local.Write(buf[:n]); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			log.Debug("rtc: forward", "err", err)
		}
	}
}

// publish makes a publication for what arrives on sl, unless the source was
// unpublished within republishGrace or the participant is leaving.
func (p *Participant) publish(sl *slot, remote *webrtc.TrackRemote) *publication {
	p.mu.Lock()
	if p.closed || time.Since(p.unpublishedAt[sl.source]) < republishGrace {
		p.mu.Unlock()
		return nil
	}
	id := fmt.Sprintf("%s-%d", sl.source, p.room.seq.Add(1))
	local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, id, p.id)
	if err != nil {
		p.mu.Unlock()
		p.log.Error("rtc: local track", "source", sl.source, "err", err)
		return nil
	}
	pub := &publication{publisher: p, source: sl.source, ssrc: remote.SSRC(), local: local}
	pub.muted.Store(p.muted[sl.source])
	sl.pub.Store(pub)
	p.mu.Unlock()

	if !p.room.publish(pub) {
		sl.pub.CompareAndSwap(pub, nil)
		return nil
	}
	return pub
}

// watch reacts to the connection's state: a failed connection loses its
// tracks and gets an ICE-restart offer; a connection that closed without
// Leave takes the participant out of the room.
func (p *Participant) watch() {
	for {
		select {
		case <-p.done:
			return
		case <-p.state:
		}
		switch st := p.pc.ConnectionState(); st {
		case webrtc.PeerConnectionStateConnected:
			p.log.Debug("rtc: connected")
			p.mu.Lock()
			subs := make([]*subscription, 0, len(p.subs))
			for _, sub := range p.subs {
				subs = append(subs, sub)
			}
			p.mu.Unlock()
			for _, sub := range subs {
				sub.pub.keyframe(true)
			}
		case webrtc.PeerConnectionStateFailed:
			p.log.Warn("rtc: connection failed; restarting ICE")
			for _, sl := range p.slots {
				if pub := sl.pub.Swap(nil); pub != nil {
					p.room.unpublish(pub)
				}
			}
			_ = p.RestartICE()
		case webrtc.PeerConnectionStateClosed:
			p.room.sfu.goroutine(func() { p.room.leave(p, ErrConnectionClosed) })
			return
		}
	}
}

// emit queues a call to the participant's Signaler.
func (p *Participant) emit(fn func(Signaler)) { p.events.push(fn) }

// candidateGate puts every local ICE candidate after the offer it belongs to.
// Gathering starts in SetLocalDescription, before negotiateLocked queues the
// offer, and a client handed a candidate first has no remote description to
// add it to. Candidates found meanwhile wait for the offer. The gate has its
// own lock, never held while calling Pion, whose gathering goroutine calls
// send.
type candidateGate struct {
	mu      sync.Mutex
	holding bool
	held    []webrtc.ICECandidateInit
}

func (g *candidateGate) send(p *Participant, c webrtc.ICECandidateInit) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holding {
		g.held = append(g.held, c)
		return
	}
	p.emit(func(s Signaler) { s.Candidate(c) })
}

func (g *candidateGate) hold() {
	g.mu.Lock()
	g.holding = true
	g.mu.Unlock()
}

// release sends the candidates held, after the offer negotiateLocked queued
// (it runs deferred, so after the offer whether or not one was made).
func (g *candidateGate) release(p *Participant) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holding = false
	for _, c := range g.held {
		p.emit(func(s Signaler) { s.Candidate(c) })
	}
	g.held = nil
}

// goroutine runs fn as one of the participant's goroutines, unless it closed.
func (p *Participant) goroutine(fn func()) {
	p.gmu.Lock()
	defer p.gmu.Unlock()
	if p.gclosed {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
}

// close ends the participant: no more negotiation, the connection closed,
// its goroutines finished, and its Signaler told with Closed(err).
func (p *Participant) close(err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.shutdown()
	p.events.close(err, true)
}

// discard ends a participant that never joined, telling its Signaler nothing.
func (p *Participant) discard() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.shutdown()
	p.events.close(nil, false)
}

func (p *Participant) shutdown() {
	p.gmu.Lock()
	p.gclosed = true
	p.gmu.Unlock()
	close(p.done)
	if err := p.pc.GracefulClose(); err != nil {
		p.log.Debug("rtc: close peer connection", "err", err)
	}
	p.wg.Wait()
}

// events delivers calls to a Signaler in order from one goroutine, so the
// SFU never calls it while holding a lock and never blocks on it.
type events struct {
	mu    sync.Mutex
	queue []func(Signaler)
	wake  chan struct{} // capacity 1: the queue has grown
	stop  chan closing  // capacity 1: deliver Closed(err) and end
	done  bool
}

func (e *events) push(fn func(Signaler)) {
	e.mu.Lock()
	if e.done {
		e.mu.Unlock()
		return
	}
	e.queue = append(e.queue, fn)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// close drops what is queued and, if tell, delivers Closed(err) last.
func (e *events) close(err error, tell bool) {
	e.mu.Lock()
	if e.done {
		e.mu.Unlock()
		return
	}
	e.done = true
	e.queue = nil
	e.mu.Unlock()
	e.stop <- closing{err: err, tell: tell}
}

type closing struct {
	err  error
	tell bool
}

func (e *events) run(sig Signaler) {
	for {
		select {
		case c := <-e.stop:
			if c.tell {
				sig.Closed(c.err)
			}
			return
		case <-e.wake:
		}
		for {
			e.mu.Lock()
			if len(e.queue) == 0 || e.done {
				e.mu.Unlock()
				break
			}
			fn := e.queue[0]
			e.queue[0] = nil
			e.queue = e.queue[1:]
			e.mu.Unlock()
			fn(sig)
		}
	}
}
