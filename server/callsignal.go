package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/pion/webrtc/v4"
	"google.golang.org/protobuf/proto"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/rtc"
)

// signalBuffer is how many signals a Signals stream may fall behind before
// it is cut.
const signalBuffer = 256

// signalStream is one participant's Signals stream as the SFU sees it: an
// rtc.Signaler that queues what the SFU says for the stream's goroutine to
// send. The SFU calls it from one goroutine per participant and must not be
// blocked, so a stream that cannot keep up is cut.
type signalStream struct {
	out    chan *parleyv1.SignalsResponse
	closed chan struct{} // the participant is out of the room
	cut    chan struct{} // the stream must end with cutErr
	once   sync.Once
	cutMu  sync.Once
	cutErr error

	callID string
	p      *rtc.Participant // set once Join returned, under callsService.mu
}

func newSignalStream(callID string) *signalStream {
	return &signalStream{callID: callID, out: make(chan *parleyv1.SignalsResponse, signalBuffer), closed: make(chan struct{}), cut: make(chan struct{})}
}

func (ss *signalStream) queue(m *parleyv1.SignalsResponse) {
	select {
	case ss.out <- m:
	default:
		ss.end(errSlowSignals)
	}
}

// end cuts the stream with err.
func (ss *signalStream) end(err error) {
	ss.cutMu.Do(func() {
		ss.cutErr = err
		close(ss.cut)
	})
}

func (ss *signalStream) Offer(o rtc.Offer) {
	mids := make(map[string]parleyv1.TrackSource, len(o.SendMIDs))
	for mid, src := range o.SendMIDs {
		mids[mid] = parleyv1.TrackSource(src)
	}
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_Offer{Offer: &parleyv1.SdpOffer{
		Sdp: o.SDP, Revision: o.Revision, IceRestart: o.ICERestart, SendMids: mids,
	}}})
}

func (ss *signalStream) Candidate(c webrtc.ICECandidateInit) {
	out := &parleyv1.IceCandidate{Candidate: c.Candidate, SdpMid: c.SDPMid}
	if c.SDPMLineIndex != nil {
		i := uint32(*c.SDPMLineIndex)
		out.SdpMlineIndex = &i
	}
	if c.UsernameFragment != nil {
		out.UsernameFragment = *c.UsernameFragment
	}
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_Candidate{Candidate: out}})
}

func (ss *signalStream) ParticipantJoined(id string) {
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_ParticipantJoined{ParticipantJoined: &parleyv1.CallParticipant{
		UserId: id, State: parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED,
	}}})
}

func (ss *signalStream) ParticipantLeft(id string) {
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_ParticipantLeft{ParticipantLeft: &parleyv1.CallParticipant{
		UserId: id, State: parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT,
	}}})
}

func (ss *signalStream) TrackPublished(t rtc.Track) {
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_TrackPublished{TrackPublished: &parleyv1.TrackPublished{
		UserId: t.ParticipantID, Source: parleyv1.TrackSource(t.Source), Mid: t.MID, TrackId: t.TrackID, StreamId: t.StreamID, Muted: t.Muted,
	}}})
}

func (ss *signalStream) TrackUnpublished(t rtc.Track) {
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_TrackUnpublished{TrackUnpublished: &parleyv1.TrackUnpublished{
		UserId: t.ParticipantID, Source: parleyv1.TrackSource(t.Source), Mid: t.MID,
	}}})
}

func (ss *signalStream) MuteChanged(id string, source rtc.Source, muted bool) {
	ss.queue(&parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_MuteChanged{MuteChanged: &parleyv1.MuteChanged{
		UserId: id, Source: parleyv1.TrackSource(source), Muted: muted,
	}}})
}

func (ss *signalStream) Closed(error) { ss.once.Do(func() { close(ss.closed) }) }

func streamKey(callID, userID string) string { return callID + "/" + userID }

// joinedCall reads a call the caller has joined, with its participants.
func (s *callsService) joinedCall(ctx context.Context, callID, userID string) (*callTx, error) {
	var ct *callTx
	err := s.db.Tx(ctx, func(q *db.Queries) error {
		var err error
		if ct, err = lockCall(ctx, q, callID, userID); err != nil {
			return err
		}
		if me, ok := ct.participant(userID); !ok || me.State != partJoined || ct.call.State == callEnded {
			return errNotJoined
		}
		return nil
	})
	return ct, err
}

// room returns the SFU room of a call, creating it on the first join.
func (s *callsService) room(call db.Call) (*rtc.Room, error) {
	if r, ok := s.sfu.Room(call.ID); ok {
		return r, nil
	}
	r, err := s.sfu.CreateRoom(call.ID, rtc.RoomOptions{AudioOnly: call.Kind == int16(parleyv1.CallKind_CALL_KIND_AUDIO)})
	if errors.Is(err, rtc.ErrRoomExists) {
		if r, ok := s.sfu.Room(call.ID); ok {
			return r, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create room: %w", err)
	}
	return r, nil
}

// host returns the URL of the node that hosts a call's room, or "" when
// this node does: it claims the room when nobody hosts it, for instance
// after its node died and the lease ran out.
func (s *callsService) host(ctx context.Context, callID string) (string, error) {
	url, err := s.nodes.owner(ctx, callID, true)
	if err != nil {
		if _, ok := s.sfu.Room(callID); ok {
			// Redis is away: the room here carries on.
			return "", nil
		}
		s.logger.WarnContext(ctx, "find the node of a call", "call_id", callID, "error", err)
		return "", errCallNodeUnreachable
	}
	if url != "" && forwarded(ctx) {
		// The node that passed this on thinks the room is here, and
		// Redis says it is on a third: let the client try again.
		return "", errCallMoved
	}
	return url, nil
}

// Signals streams the media server's signaling to a joined participant. On
// a node that does not host the call's room it passes the stream through
// to the node that does.
func (s *callsService) Signals(ctx context.Context, req *parleyv1.SignalsRequest, stream *connect.ServerStream[parleyv1.SignalsResponse]) error {
	c, err := mustCaller(ctx)
	if err != nil {
		return err
	}
	ct, err := s.joinedCall(ctx, req.GetCallId(), c.UserID)
	if err != nil {
		return err
	}
	url, err := s.host(ctx, ct.call.ID)
	if err != nil {
		return err
	}
	if url != "" {
		return s.proxySignals(ctx, url, streamKey(ct.call.ID, c.UserID), req, stream)
	}
	room, err := s.room(ct.call)
	if err != nil {
		return err
	}
	ss := newSignalStream(ct.call.ID)
	key := streamKey(ct.call.ID, c.UserID)
	s.mu.Lock()
	old := s.streams[key]
	s.streams[key] = ss
	s.mu.Unlock()
	if old != nil {
		// A newer stream replaces the old one, which leaves the room first.
		old.end(errSignalsReplaced)
		s.mu.Lock()
		op := old.p
		s.mu.Unlock()
		if op != nil {
			op.Leave()
		}
	}
	s.grace.stop(key)
	defer func() {
		s.mu.Lock()
		last := s.streams[key] == ss
		if last {
			delete(s.streams, key)
		}
		s.mu.Unlock()
		if last && ctx.Err() != nil {
			// The client went away without hanging up: it has a while to
			// open Signals again before it counts as having left.
			s.grace.start(key, s.cfg.SignalsGrace)
		}
	}()
	s.mu.Lock()
	p, err := room.Join(c.UserID, ss)
	if err == nil {
		ss.p = p
	}
	s.mu.Unlock()
	switch {
	case errors.Is(err, rtc.ErrRoomFull):
		return errCallFull
	case errors.Is(err, rtc.ErrRoomClosed), errors.Is(err, rtc.ErrClosed):
		return errCallEnded
	case err != nil:
		return fmt.Errorf("join room: %w", err)
	}
	defer p.Leave()
	first := &parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_Call{Call: s.withTracks(callToProto(ct.call, ct.parts, ct.conv.Kind))}}
	if err := stream.Send(first); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ss.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-ss.cut:
			return ss.cutErr
		case <-ss.closed:
			for {
				select {
				case m := <-ss.out:
					if err := stream.Send(m); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		}
	}
}

// proxyStream is a Signals stream this node passes to the node hosting its
// call's room.
type proxyStream struct{ url string }

// proxySignals relays the Signals stream of the node at url, which hosts the
// call's room, to the client.
func (s *callsService) proxySignals(ctx context.Context, url, key string, req *parleyv1.SignalsRequest, stream *connect.ServerStream[parleyv1.SignalsResponse]) error {
	ps := &proxyStream{url: url}
	s.mu.Lock()
	s.proxies[key] = ps
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.proxies[key] == ps {
			delete(s.proxies, key)
		}
		s.mu.Unlock()
	}()
	up, err := s.nodes.client(url).Signals(forwardContext(ctx), req)
	if err != nil {
		return forwardError(err)
	}
	defer up.Close()
	for up.Receive() {
		if err := stream.Send(up.Msg()); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return forwardError(up.Err())
}

// withTracks fills in the tracks each joined participant publishes, when the
// call's room is on this node.
func (s *callsService) withTracks(call *parleyv1.Call) *parleyv1.Call {
	r, ok := s.sfu.Room(call.GetId())
	if !ok {
		return call
	}
	tracks := r.Published()
	slices.SortFunc(tracks, func(a, b rtc.Track) int { return cmp.Compare(a.Source, b.Source) })
	for _, p := range call.GetParticipants() {
		if p.GetState() != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED {
			continue
		}
		for _, t := range tracks {
			if t.ParticipantID == p.GetUserId() {
				p.Tracks = append(p.Tracks, &parleyv1.Track{Source: parleyv1.TrackSource(t.Source), Muted: t.Muted})
			}
		}
	}
	return call
}

// signalsOf returns the Signals streams open for a call on this node.
func (s *callsService) signalsOf(callID string) map[string]*signalStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*signalStream)
	for _, ss := range s.streams {
		if ss.p != nil && ss.callID == callID {
			out[ss.p.ID()] = ss
		}
	}
	return out
}

// signalChange tells a call's Signals streams on this node of a change: the
// call's new state to each; a participant who is no longer joined leaves the
// room, and an ended call closes it, which ends every stream, and gives up
// its lease.
func (s *callsService) signalChange(call *parleyv1.Call) {
	streams := s.signalsOf(call.GetId())
	if len(streams) > 0 {
		msg := &parleyv1.SignalsResponse{Signal: &parleyv1.SignalsResponse_Call{Call: s.withTracks(proto.Clone(call).(*parleyv1.Call))}}
		for _, ss := range streams {
			ss.queue(msg)
		}
	}
	s.applyChange(call, streams)
}

// applyChange makes this node's room of a call agree with the call's state.
func (s *callsService) applyChange(call *parleyv1.Call, streams map[string]*signalStream) {
	if call.GetState() == parleyv1.CallState_CALL_STATE_ENDED {
		if r, ok := s.sfu.Room(call.GetId()); ok {
			r.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.nodes.release(ctx, call.GetId()); err != nil {
			s.logger.Warn("release a call lease", "call_id", call.GetId(), "error", err)
		}
		return
	}
	for _, p := range call.GetParticipants() {
		if ss, ok := streams[p.GetUserId()]; ok && p.GetState() != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED {
			ss.p.Leave()
		}
	}
}

// keepRooms renews the leases of the rooms this node hosts until ctx ends.
// A room whose lease went to another node (this node was cut off for
// longer than the lease) closes, its streams ending Unavailable so that
// their clients reopen them on the new host. Each round also reads every
// hosted call from PostgreSQL, which heals a change whose Redis message was
// lost: a call that ended closes its room, a participant no longer joined
// leaves it, invitations that rang past their time end.
func (s *callsService) keepRooms(ctx context.Context) {
	tick := time.NewTicker(max(s.nodes.lease/3, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, id := range s.nodes.ownedCalls() {
			if _, ok := s.sfu.Room(id); !ok && s.nodes.claimedBefore(id, time.Now().Add(-time.Second)) {
				if err := s.nodes.release(ctx, id); err != nil && ctx.Err() == nil {
					s.logger.WarnContext(ctx, "release a call lease", "call_id", id, "error", err)
				}
				continue
			}
			held, err := s.nodes.renew(ctx, id)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.WarnContext(ctx, "renew a call lease", "call_id", id, "error", err)
				}
				continue
			}
			if !held {
				s.logger.WarnContext(ctx, "lost the lease of a call's room; closing it here", "call_id", id)
				for _, ss := range s.signalsOf(id) {
					ss.end(errCallMoved)
				}
				if r, ok := s.sfu.Room(id); ok {
					r.Close()
				}
				continue
			}
			if err := s.reconcile(ctx, id); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "check a hosted call", "call_id", id, "error", err)
			}
		}
	}
}

// reconcile applies a hosted call's state as PostgreSQL has it.
func (s *callsService) reconcile(ctx context.Context, callID string) error {
	call, err := s.db.GetCall(ctx, callID)
	if err != nil {
		return fmt.Errorf("get call: %w", err)
	}
	parts, err := s.db.ListCallParticipants(ctx, callID)
	if err != nil {
		return fmt.Errorf("list call participants: %w", err)
	}
	kinds, err := s.conversationKinds(ctx, []string{call.ConversationID})
	if err != nil {
		return err
	}
	if call.State == callActive && time.Since(call.StartedAt) > s.cfg.CallRingTimeout &&
		slices.ContainsFunc(parts, func(p db.CallParticipant) bool { return p.State == partInvited }) {
		// The timer of these invitations was on a node that went away.
		return s.expireCall(ctx, callID)
	}
	s.applyChange(callToProto(call, parts, kinds[call.ConversationID]), s.signalsOf(callID))
	return nil
}

// signalHost returns the node that has the caller's Signals stream for a
// call when it is another node: the one this node passes the stream to, else
// the one hosting the call's room.
func (s *callsService) signalHost(ctx context.Context, callID, userID string) (string, error) {
	s.mu.Lock()
	ps := s.proxies[streamKey(callID, userID)]
	s.mu.Unlock()
	if ps != nil {
		return ps.url, nil
	}
	url, err := s.nodes.owner(ctx, callID, false)
	if err != nil {
		s.logger.WarnContext(ctx, "find the node of a call", "call_id", callID, "error", err)
		return "", errCallNodeUnreachable
	}
	return url, nil
}

// Signal passes one of the client's signals to its participant in the SFU.
func (s *callsService) Signal(ctx context.Context, req *parleyv1.SignalRequest) (*parleyv1.SignalResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var p *rtc.Participant
	s.mu.Lock()
	if ss := s.streams[streamKey(req.GetCallId(), c.UserID)]; ss != nil {
		p = ss.p
	}
	s.mu.Unlock()
	if p == nil && !forwarded(ctx) {
		if url, err := s.signalHost(ctx, req.GetCallId(), c.UserID); err != nil {
			return nil, err
		} else if url != "" {
			res, err := s.nodes.client(url).Signal(forwardContext(ctx), req)
			return res, forwardError(err)
		}
	}
	if p == nil {
		// The call may not exist or be someone else's: say so first.
		if _, err := s.joinedCall(ctx, req.GetCallId(), c.UserID); err != nil {
			return nil, err
		}
		return nil, errNoSignals
	}
	switch sig := req.GetSignal().(type) {
	case *parleyv1.SignalRequest_Answer:
		err = p.Answer(sig.Answer.GetRevision(), sig.Answer.GetSdp())
	case *parleyv1.SignalRequest_Candidate:
		cand := webrtc.ICECandidateInit{Candidate: sig.Candidate.GetCandidate(), SDPMid: sig.Candidate.SdpMid}
		if sig.Candidate.SdpMlineIndex != nil {
			i := uint16(sig.Candidate.GetSdpMlineIndex())
			cand.SDPMLineIndex = &i
		}
		if u := sig.Candidate.GetUsernameFragment(); u != "" {
			cand.UsernameFragment = &u
		}
		err = p.AddCandidate(cand)
	case *parleyv1.SignalRequest_Mute:
		err = p.SetMuted(rtc.Source(sig.Mute.GetSource()), sig.Mute.GetMuted())
	case *parleyv1.SignalRequest_Unpublish:
		err = p.Unpublish(rtc.Source(sig.Unpublish.GetSource()))
	case *parleyv1.SignalRequest_RestartIce:
		err = p.RestartICE()
	}
	switch {
	case errors.Is(err, rtc.ErrStaleAnswer):
		return nil, errStaleAnswer
	case errors.Is(err, rtc.ErrLeft):
		return nil, errNoSignals
	case errors.Is(err, rtc.ErrInvalidSignal):
		return nil, invalidArgument("signal", "parley.signal_parses", "the SDP or candidate cannot be parsed")
	case err != nil:
		return nil, fmt.Errorf("signal: %w", err)
	}
	return &parleyv1.SignalResponse{}, nil
}
