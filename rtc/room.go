package rtc

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Room is a set of participants who receive each other's tracks. It lives
// until Close (or the SFU's Close), whether or not anyone is in it.
type Room struct {
	id    string
	sfu   *SFU
	opts  RoomOptions
	limit int
	log   *slog.Logger
	seq   atomic.Int64 // numbers published tracks, for their ids

	// mu guards the fields below. It is never held while taking a
	// participant's lock or calling into Pion.
	mu           sync.Mutex
	participants map[string]*Participant
	pubs         map[*publication]struct{}
	closed       bool
}

// ID returns the room's id.
func (r *Room) ID() string { return r.id }

// Limit returns how many participants the room admits.
func (r *Room) Limit() int { return r.limit }

// Participants returns the ids of the participants in the room.
func (r *Room) Participants() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.participants))
	for id := range r.participants {
		ids = append(ids, id)
	}
	return ids
}

// Published returns the tracks published in the room, with the publisher,
// source, track and stream ids and whether the publisher muted them. MID is
// empty: it belongs to a receiving participant's connection.
func (r *Room) Published() []Track {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Track, 0, len(r.pubs))
	for pub := range r.pubs {
		out = append(out, Track{
			ParticipantID: pub.publisher.id,
			Source:        pub.source,
			TrackID:       pub.local.ID(),
			StreamID:      pub.local.StreamID(),
			Muted:         pub.muted.Load(),
		})
	}
	return out
}

// Join adds a participant to the room and creates its PeerConnection with the
// server. Its Signaler then receives ParticipantJoined for everyone already in
// the room, TrackPublished for their tracks, and the first Offer, whose
// SendMIDs name the slots to publish on. Join returns ErrRoomFull when the room
// is at its limit, ErrAlreadyJoined when the id is in the room, ErrRoomClosed
// or ErrClosed.
func (r *Room) Join(participantID string, sig Signaler) (*Participant, error) {
	if sig == nil {
		return nil, fmt.Errorf("%w: no Signaler", ErrInvalidSignal)
	}
	if err := r.admits(participantID); err != nil {
		return nil, err
	}
	p, err := newParticipant(r, participantID, sig)
	if err != nil {
		return nil, err
	}

	r.mu.Lock()
	err = r.admitsLocked(participantID)
	if err != nil {
		r.mu.Unlock()
		p.discard()
		return nil, err
	}
	others := make([]*Participant, 0, len(r.participants))
	for _, o := range r.participants {
		others = append(others, o)
	}
	pubs := make([]*publication, 0, len(r.pubs))
	for pub := range r.pubs {
		pubs = append(pubs, pub)
	}
	r.participants[participantID] = p
	r.mu.Unlock()

	for _, o := range others {
		o.emit(func(s Signaler) { s.ParticipantJoined(participantID) })
		p.emit(func(s Signaler) { s.ParticipantJoined(o.id) })
	}
	p.mu.Lock()
	p.subscribeLocked(pubs)
	p.negotiateLocked()
	p.mu.Unlock()
	p.log.Info("rtc: joined", "participants", len(others)+1)
	return p, nil
}

func (r *Room) admits(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.admitsLocked(id)
}

func (r *Room) admitsLocked(id string) error {
	switch {
	case r.closed:
		return ErrRoomClosed
	case r.participants[id] != nil:
		return ErrAlreadyJoined
	case len(r.participants) >= r.limit:
		return ErrRoomFull
	}
	return nil
}

// Close removes every participant (their Signalers get Closed with
// ErrRoomClosed) and forgets the room.
func (r *Room) Close() { r.close(ErrRoomClosed) }

func (r *Room) close(err error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	parts := make([]*Participant, 0, len(r.participants))
	for _, p := range r.participants {
		parts = append(parts, p)
	}
	for pub := range r.pubs {
		pub.closed.Store(true)
	}
	clear(r.participants)
	clear(r.pubs)
	r.mu.Unlock()

	r.sfu.removeRoom(r)
	for _, p := range parts {
		p.close(err)
	}
}

// leave takes p out of the room: its tracks are removed from everyone, the
// others learn it left, and its connection closes.
func (r *Room) leave(p *Participant, err error) {
	r.mu.Lock()
	if r.participants[p.id] != p {
		r.mu.Unlock()
		p.close(err)
		return
	}
	delete(r.participants, p.id)
	var gone []*publication
	for pub := range r.pubs {
		if pub.publisher == p {
			pub.closed.Store(true)
			delete(r.pubs, pub)
			gone = append(gone, pub)
		}
	}
	others := make([]*Participant, 0, len(r.participants))
	for _, o := range r.participants {
		others = append(others, o)
	}
	r.mu.Unlock()

	// Close first, so p stops forwarding and the others' offers follow at once.
	p.close(err)
	for _, o := range others {
		o.unsubscribe(gone...)
		o.emit(func(s Signaler) { s.ParticipantLeft(p.id) })
	}
	p.log.Info("rtc: left", "err", err)
}

// publish forwards pub to everyone else in the room; false when the room or
// its publisher is gone or pub was unpublished meanwhile.
func (r *Room) publish(pub *publication) bool {
	r.mu.Lock()
	if r.closed || pub.closed.Load() || r.participants[pub.publisher.id] != pub.publisher {
		r.mu.Unlock()
		return false
	}
	r.pubs[pub] = struct{}{}
	others := r.othersLocked(pub.publisher)
	r.mu.Unlock()

	for _, o := range others {
		o.subscribe(pub)
	}
	pub.publisher.log.Info("rtc: published", "source", pub.source, "codec", pub.local.Codec().MimeType)
	return true
}

// unpublish stops forwarding pub.
func (r *Room) unpublish(pub *publication) {
	r.mu.Lock()
	pub.closed.Store(true)
	if _, ok := r.pubs[pub]; !ok {
		r.mu.Unlock()
		return
	}
	delete(r.pubs, pub)
	others := r.othersLocked(pub.publisher)
	r.mu.Unlock()

	for _, o := range others {
		o.unsubscribe(pub)
	}
	pub.publisher.log.Info("rtc: unpublished", "source", pub.source)
}

// broadcast calls fn on the Signaler of everyone in the room but from.
func (r *Room) broadcast(from *Participant, fn func(Signaler)) {
	r.mu.Lock()
	others := r.othersLocked(from)
	r.mu.Unlock()
	for _, o := range others {
		o.emit(fn)
	}
}

func (r *Room) othersLocked(p *Participant) []*Participant {
	others := make([]*Participant, 0, len(r.participants))
	for _, o := range r.participants {
		if o != p {
			others = append(others, o)
		}
	}
	return others
}

// publication is one published track: what a publisher sends on one slot,
// forwarded through one local track to every subscriber.
type publication struct {
	publisher *Participant
	source    Source
	ssrc      webrtc.SSRC // of the publisher's incoming track, for keyframe requests
	local     *webrtc.TrackLocalStaticRTP
	muted     atomic.Bool
	closed    atomic.Bool // set under Room.mu; once set, nobody subscribes
	lastPLI   atomic.Int64
}

// minPLIInterval spaces the keyframe requests subscribers send to a publisher.
const minPLIInterval = 200 * time.Millisecond

// keyframe asks the publisher for a keyframe; unless forced, at most once per
// minPLIInterval (many subscribers may ask at once).
func (pub *publication) keyframe(force bool) {
	if pub.source.kind() != webrtc.RTPCodecTypeVideo {
		return
	}
	now := time.Now().UnixNano()
	last := pub.lastPLI.Load()
	if !force && now-last < int64(minPLIInterval) {
		return
	}
	pub.lastPLI.Store(now)
	err := pub.publisher.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(pub.ssrc)}})
	if err != nil {
		pub.publisher.log.Debug("rtc: keyframe request", "source", pub.source, "err", err)
	}
}
