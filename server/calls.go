package server

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/rtc"
)

// Call and participant states as stored in calls.state and
// call_participants.state.
const (
	callRinging = int16(parleyv1.CallState_CALL_STATE_RINGING)
	callActive  = int16(parleyv1.CallState_CALL_STATE_ACTIVE)
	callEnded   = int16(parleyv1.CallState_CALL_STATE_ENDED)

	partInvited  = int16(parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_INVITED)
	partJoined   = int16(parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED)
	partDeclined = int16(parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_DECLINED)
	partLeft     = int16(parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT)
	partMissed   = int16(parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_MISSED)

	kindDirect = int16(parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT)
)

const (
	defaultListCalls   = 20
	maxVideoCallJoined = 16
	maxAudioCallJoined = 50
)

// ICEConfig are the STUN and TURN servers handed to clients for calls.
type ICEConfig struct {
	// STUNURLs are STUN server URLs ("stun:host:3478").
	STUNURLs []string
	// TURNURLs are TURN server URLs ("turn:host:3478?transport=udp"); they
	// are handed out only with credentials, so TURNSecret must be set.
	TURNURLs []string
	// TURNSecret is the secret shared with the TURN server (coturn's
	// static-auth-secret) for time-limited credentials.
	TURNSecret string
	// TURNTTL is how long a TURN credential works.
	TURNTTL time.Duration
}

// callsService implements the lifecycle of parley.v1.CallsService: start,
// answer, decline, hang up, ringing timeout, history and ICE servers. Every
// change to a call runs under its conversation's row lock (the lock Send and
// group changes take), so the call's state, its participants and the
// CallEnded entry that records its end are settled in one transaction, and
// the members hear of it after commit as CallEvents (never stored).
type callsService struct {
	parleyv1connect.UnimplementedCallsServiceHandler

	db     *db.DB
	hub    *hub
	cfg    Config
	logger *slog.Logger
	ringer *ringer
	grace  *ringer // by streamKey: participants whose Signals stream dropped
	starts *keyedLimiter
	sfu    *rtc.SFU
	nodes  *callNodes

	mu      sync.Mutex
	streams map[string]*signalStream // Signals streams on this node, by streamKey
	proxies map[string]*proxyStream  // Signals streams passed to the node hosting their room, by streamKey
}

func newCallsService(d *db.DB, h *hub, cfg Config, logger *slog.Logger) (*callsService, error) {
	var redis rueidis.Client
	if h.relay != nil {
		if cfg.NodeURL == "" {
			return nil, errors.New("calls across nodes need this node's URL (Config.NodeURL, PARLEY_NODE_URL)")
		}
		redis = h.relay.client
	}
	sfu, err := rtc.New(cfg.RTC, logger.With("component", "sfu"))
	if err != nil {
		return nil, err
	}
	s := &callsService{
		sfu:     sfu,
		nodes:   newCallNodes(redis, cfg.NodeURL, cmp.Or(cfg.CallLease, 10*time.Second), cfg.NodeClient),
		streams: make(map[string]*signalStream),
		proxies: make(map[string]*proxyStream),
		db:      d,
		hub:     h,
		cfg:     cfg,
		logger:  logger.With("component", "calls"),
		// Every call rings every member: a client in a loop must not ring
		// a group thousands of times.
		starts: newKeyedLimiter(Rate{Burst: 30, Per: 10 * time.Minute}, 100_000),
	}
	s.ringer = newRinger(s.expire, s.logger)
	s.grace = newRinger(s.leaveAfterGrace, s.logger)
	s.ringer.run(s.resumeRinging)
	if s.nodes.clustered() {
		h.relay.onCall(func(call *parleyv1.Call) {
			// Off the relay's goroutine: applying a change may ask Redis.
			s.ringer.run(func(context.Context) { s.signalChange(call) })
		})
		s.ringer.run(s.keepRooms)
	}
	return s, nil
}

// Close stops the ringing timers and the media server, and gives up this
// node's call leases so that other nodes take the calls over at once.
func (s *callsService) Close() {
	s.ringer.Close()
	s.grace.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, id := range s.nodes.ownedCalls() {
		if err := s.nodes.release(ctx, id); err != nil {
			s.logger.Warn("release a call lease", "call_id", id, "error", err)
		}
	}
	if err := s.sfu.Close(); err != nil {
		s.logger.Error("close the media server", "error", err)
	}
}

func (s *callsService) timeoutSeconds() float64 { return s.cfg.CallRingTimeout.Seconds() }

// resumeRinging gives every call still ringing in the database, and every
// group call in progress with members still being rung, a timer for the time
// it has left: the calls of a node that stopped keep ending, and their
// invitations keep expiring.
func (s *callsService) resumeRinging(ctx context.Context) {
	rows, err := s.db.ListRinging(ctx, s.timeoutSeconds())
	if err != nil {
		if ctx.Err() == nil {
			s.logger.ErrorContext(ctx, "list ringing calls", "error", err)
		}
		return
	}
	for _, r := range rows {
		s.ringer.start(r.ID, time.Duration(r.RemainingSeconds*float64(time.Second)))
	}
}

// expireStale ends as missed the calls that rang past their time and whose
// timer has not fired (it was lost with a node, or is late), so that what a
// request reads is never a call ringing forever.
func (s *callsService) expireStale(ctx context.Context) error {
	stale, err := s.db.ListStaleRinging(ctx, s.timeoutSeconds())
	if err != nil {
		return fmt.Errorf("list stale ringing calls: %w", err)
	}
	for _, c := range stale {
		if err := s.expireCall(ctx, c.ID); err != nil {
			return err
		}
	}
	return nil
}

// expire is the ringer's timer: the call ends as missed if it still rings.
func (s *callsService) expire(ctx context.Context, callID string) {
	if err := s.expireCall(ctx, callID); err != nil && ctx.Err() == nil {
		s.logger.ErrorContext(ctx, "expire call", "call_id", callID, "error", err)
	}
}

func (s *callsService) expireCall(ctx context.Context, callID string) error {
	_, err := s.change(ctx, callID, "", func(ct *callTx) error {
		switch ct.call.State {
		case callRinging:
			return ct.end(ctx, parleyv1.CallOutcome_CALL_OUTCOME_MISSED)
		case callActive:
			// A group call goes on; the members still rung stop ringing.
			for _, p := range slices.Clone(ct.parts) {
				if p.State == partInvited {
					if err := ct.miss(ctx, p.UserID); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return err
}

// callTx is a call as one change sees it, under its conversation's lock.
type callTx struct {
	q     *db.Queries
	conv  db.Conversation
	call  db.Call
	parts []db.CallParticipant

	viewers  []string          // users listed in what is published whatever their state (see callToProtoFor)
	changed  bool              // the call or its participants changed
	ended    *parleyv1.Message // the CallEnded entry, when the change ended the call
	incoming []string          // users rung by this change
	to       []string          // the conversation's current members
}

// lockCall locks a call's conversation and reads the call. userID, unless
// empty, must be a current member of the conversation: to anyone else the
// call does not exist.
func lockCall(ctx context.Context, q *db.Queries, callID, userID string) (*callTx, error) {
	call, err := q.GetCall(ctx, callID)
	if db.IsNoRows(err) {
		return nil, errCallNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get call: %w", err)
	}
	conv, err := q.LockConversation(ctx, call.ConversationID)
	if err != nil {
		return nil, fmt.Errorf("lock call conversation: %w", err)
	}
	// Read again under the lock: the call may have changed while we waited.
	if call, err = q.GetCall(ctx, callID); err != nil {
		return nil, fmt.Errorf("get call: %w", err)
	}
	ct := &callTx{q: q, conv: conv, call: call}
	if ct.parts, err = q.ListCallParticipants(ctx, callID); err != nil {
		return nil, fmt.Errorf("list call participants: %w", err)
	}
	if userID != "" {
		me, err := q.GetMembership(ctx, db.GetMembershipParams{ConversationID: call.ConversationID, UserID: userID})
		if err != nil && !db.IsNoRows(err) {
			return nil, fmt.Errorf("get membership: %w", err)
		}
		// A member who left the group during the call may still hang up:
		// nothing else takes them out of it.
		p, inCall := ct.participant(userID)
		if (err != nil || me.LeftSeq != nil) && !(inCall && p.State == partJoined) {
			return nil, errCallNotFound
		}
	}
	return ct, nil
}

// participant returns userID's part in the call, if they have one.
func (ct *callTx) participant(userID string) (db.CallParticipant, bool) {
	i := slices.IndexFunc(ct.parts, func(p db.CallParticipant) bool { return p.UserID == userID })
	if i < 0 {
		return db.CallParticipant{}, false
	}
	return ct.parts[i], true
}

func (ct *callTx) count(state int16) int {
	n := 0
	for _, p := range ct.parts {
		if p.State == state {
			n++
		}
	}
	return n
}

// set moves userID to state, adding them to the call if they were not in it.
func (ct *callTx) set(ctx context.Context, userID string, state int16) error {
	var err error
	if _, ok := ct.participant(userID); ok {
		err = ct.q.SetCallParticipant(ctx, db.SetCallParticipantParams{CallID: ct.call.ID, UserID: userID, State: state})
	} else {
		err = ct.q.InsertCallParticipant(ctx, db.InsertCallParticipantParams{
			CallID: ct.call.ID, UserID: userID, State: state, StartedAt: ct.call.StartedAt, Joined: state == partJoined,
		})
	}
	if db.IsUniqueViolation(err, "call_participants_one_call_idx") {
		return errInAnotherCall
	}
	if err != nil {
		return fmt.Errorf("set call participant: %w", err)
	}
	ct.changed = true
	return ct.reload(ctx)
}

func (ct *callTx) reload(ctx context.Context) error {
	var err error
	if ct.call, err = ct.q.GetCall(ctx, ct.call.ID); err != nil {
		return fmt.Errorf("get call: %w", err)
	}
	if ct.parts, err = ct.q.ListCallParticipants(ctx, ct.call.ID); err != nil {
		return fmt.Errorf("list call participants: %w", err)
	}
	return nil
}

// miss stops ringing userID: their participant becomes MISSED, and what is
// published lists them so that their devices stop ringing.
func (ct *callTx) miss(ctx context.Context, userID string) error {
	if p, ok := ct.participant(userID); !ok || p.State != partInvited || ct.call.State == callEnded {
		return nil
	}
	if err := ct.set(ctx, userID, partMissed); err != nil {
		return err
	}
	ct.viewers = append(ct.viewers, userID)
	return nil
}

// leave takes userID out of the call, ending it when that leaves it empty:
// the initiator leaving before anyone answered cancels it; a direct call in
// progress ends when either side leaves, a group call with its last
// participant.
func (ct *callTx) leave(ctx context.Context, userID string) error {
	if me, ok := ct.participant(userID); !ok || me.State != partJoined || ct.call.State == callEnded {
		return nil // already out: unchanged
	}
	if err := ct.set(ctx, userID, partLeft); err != nil {
		return err
	}
	switch {
	case ct.call.State == callRinging:
		return ct.end(ctx, parleyv1.CallOutcome_CALL_OUTCOME_CANCELLED)
	case ct.conv.Kind == kindDirect || ct.count(partJoined) == 0:
		return ct.end(ctx, parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED)
	}
	return nil
}

// takeOutOfCall takes users who left a group (or, with everyone, all of its
// members, when it is dissolved) out of its call in progress, inside the
// group change's transaction, which holds the conversation's lock: joined
// ones leave, rung ones stop ringing, and a call left empty ends. It returns
// the change to publish after commit, or nil when there is no call.
func takeOutOfCall(ctx context.Context, q *db.Queries, conv db.Conversation, users []string, everyone bool) (*callTx, error) {
	call, err := q.GetActiveCall(ctx, conv.ID)
	if db.IsNoRows(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get active call: %w", err)
	}
	ct := &callTx{q: q, conv: conv, call: call}
	if ct.parts, err = q.ListCallParticipants(ctx, call.ID); err != nil {
		return nil, fmt.Errorf("list call participants: %w", err)
	}
	if everyone {
		users = nil
		for _, p := range ct.parts {
			users = append(users, p.UserID)
		}
	}
	for _, u := range users {
		if err := ct.miss(ctx, u); err != nil {
			return nil, err
		}
		if err := ct.leave(ctx, u); err != nil {
			return nil, err
		}
	}
	if ct.call.State == callRinging && ct.count(partInvited) == 0 {
		// Nobody is left to ring.
		if err := ct.end(ctx, parleyv1.CallOutcome_CALL_OUTCOME_MISSED); err != nil {
			return nil, err
		}
	}
	if !ct.changed {
		return nil, nil
	}
	if ct.to, err = currentMembers(ctx, q, conv.ID); err != nil {
		return nil, err
	}
	// Those who left the group hear that they are out of the call.
	for _, u := range users {
		if !slices.Contains(ct.to, u) {
			ct.to = append(ct.to, u)
		}
	}
	return ct, nil
}

// end ends the call with outcome and records it in the conversation's log.
func (ct *callTx) end(ctx context.Context, outcome parleyv1.CallOutcome) error {
	if _, err := ct.q.EndCall(ctx, db.EndCallParams{ID: ct.call.ID, Outcome: int16(outcome)}); err != nil {
		return fmt.Errorf("end call: %w", err)
	}
	if err := ct.q.EndCallParticipants(ctx, ct.call.ID); err != nil {
		return fmt.Errorf("end call participants: %w", err)
	}
	if err := ct.reload(ctx); err != nil {
		return err
	}
	ct.changed = true
	pc := callToProto(ct.call, ct.parts, ct.conv.Kind)
	encoded, err := proto.Marshal(&parleyv1.Message{Content: &parleyv1.Message_System{System: &parleyv1.SystemContent{
		Event: &parleyv1.SystemContent_CallEnded{CallEnded: &parleyv1.CallEnded{
			CallId: pc.GetId(), Kind: pc.GetKind(), Outcome: outcome, InitiatorId: pc.GetInitiatorId(), Duration: pc.GetDuration(),
		}},
	}}})
	if err != nil {
		return fmt.Errorf("encode call entry: %w", err)
	}
	// The server writes the entry: no member sent it, so nobody's read
	// cursor or sent count moves.
	entry, err := appendEntry(ctx, ct.q, db.InsertMessageParams{ConversationID: ct.conv.ID, Kind: kindSystem, Content: encoded})
	if err != nil {
		return err
	}
	ct.ended, err = messageToProto(entry)
	return err
}

// change runs fn on a locked call in one transaction and publishes what
// changed after commit. userID, unless empty, is the member acting.
func (s *callsService) change(ctx context.Context, callID, userID string, fn func(ct *callTx) error) (*callTx, error) {
	var ct *callTx
	err := s.db.Tx(ctx, func(q *db.Queries) error {
		var err error
		if ct, err = lockCall(ctx, q, callID, userID); err != nil {
			return err
		}
		if err := fn(ct); err != nil {
			return err
		}
		if ct.changed {
			ct.to, err = currentMembers(ctx, q, ct.conv.ID)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(ct)
	return ct, nil
}

// publish tells the conversation's members of a change: the users rung get
// the call as incoming, the others as updated, or everyone as ended followed
// by the call's CallEnded entry.
func (s *callsService) publish(ct *callTx) {
	if !ct.changed {
		return
	}
	if ct.call.State == callEnded || ct.count(partInvited) == 0 {
		// Nobody rings any more. (An answered group call keeps its timer
		// for the members still rung.)
		s.ringer.stop(ct.call.ID)
	}
	call := callToProtoFor(ct.call, ct.parts, ct.conv.Kind, ct.viewers)
	s.signalChange(call)
	if s.nodes.clustered() {
		// The call's room may live on another node.
		s.hub.relay.sendCall(call)
	}
	if ct.ended != nil {
		s.hub.publishAll([]hubEvent{
			{users: ct.to, ev: callEvent(&parleyv1.CallEvent{Change: &parleyv1.CallEvent_Ended{Ended: call}})},
			{users: ct.to, ev: &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: ct.ended}}},
		})
		return
	}
	others := slices.DeleteFunc(slices.Clone(ct.to), func(id string) bool { return slices.Contains(ct.incoming, id) })
	var evs []hubEvent
	if len(ct.incoming) > 0 {
		evs = append(evs, hubEvent{users: ct.incoming, ev: callEvent(&parleyv1.CallEvent{Change: &parleyv1.CallEvent_Incoming{Incoming: call}})})
	}
	evs = append(evs, hubEvent{users: others, ev: callEvent(&parleyv1.CallEvent{Change: &parleyv1.CallEvent_Updated{Updated: call}})})
	s.hub.publishAll(evs)
}

func callEvent(ev *parleyv1.CallEvent) *parleyv1.SubscribeResponse {
	return &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Call{Call: ev}}
}

// StartCall starts a call in a direct or group conversation, with the caller
// joined and the other current members rung.
func (s *callsService) StartCall(ctx context.Context, req *parleyv1.StartCallRequest) (*parleyv1.StartCallResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if ok, wait := s.starts.allow(c.UserID, time.Now()); !ok {
		return nil, resourceExhausted("too many calls started; wait", wait)
	}
	if err := s.expireStale(ctx); err != nil {
		return nil, err
	}
	var ct *callTx
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		conv, err := q.LockConversation(ctx, req.GetConversationId())
		if db.IsNoRows(err) {
			return errConversationNotFound
		}
		if err != nil {
			return fmt.Errorf("lock conversation: %w", err)
		}
		// The rules of sending apply: whoever may not write here may not
		// ring the others either.
		cs, err := admissionState(ctx, q, conv.ID, conv.Kind, conv.LastSeq)
		if err != nil {
			return err
		}
		if _, err := admitSender(c.UserID, cs); errors.Is(err, errAccountConversation) {
			return invalidArgument("conversation_id", "parley.call_conversation", "calls are for direct and group conversations")
		} else if err != nil {
			return err
		}
		if _, err := q.GetActiveCall(ctx, conv.ID); err == nil {
			return errCallInProgress
		} else if !db.IsNoRows(err) {
			return fmt.Errorf("get active call: %w", err)
		}
		if busy, err := inCall(ctx, q, c.UserID); err != nil {
			return err
		} else if busy {
			return errInAnotherCall
		}
		invitees := slices.DeleteFunc(cs.currentMembers(), func(id string) bool { return id == c.UserID })
		if conv.Kind == kindDirect {
			for _, id := range invitees {
				if busy, err := inCall(ctx, q, id); err != nil {
					return err
				} else if busy {
					return errCalleeBusy
				}
			}
		}
		call, err := q.InsertCall(ctx, db.InsertCallParams{ConversationID: conv.ID, Kind: int16(req.GetKind()), InitiatorID: &c.UserID})
		if db.IsUniqueViolation(err, "calls_one_active_idx") {
			return errCallInProgress
		}
		if err != nil {
			return fmt.Errorf("insert call: %w", err)
		}
		ct = &callTx{q: q, conv: conv, call: call, incoming: invitees}
		if err := ct.set(ctx, c.UserID, partJoined); err != nil {
			return err
		}
		err = q.InsertCallInvitees(ctx, db.InsertCallInviteesParams{CallID: call.ID, StartedAt: call.StartedAt, UserIds: invitees})
		if err != nil {
			return fmt.Errorf("insert call invitees: %w", err)
		}
		if err := ct.reload(ctx); err != nil {
			return err
		}
		ct.to = cs.currentMembers()
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.ringer.start(ct.call.ID, s.cfg.CallRingTimeout)
	s.publish(ct)
	return &parleyv1.StartCallResponse{
		Call:       callToProto(ct.call, ct.parts, ct.conv.Kind),
		IceServers: iceServers(s.cfg.ICE, c.UserID, time.Now()),
	}, nil
}

// inCall reports whether userID is joined to a call.
func inCall(ctx context.Context, q *db.Queries, userID string) (bool, error) {
	_, err := q.UserInCall(ctx, userID)
	if db.IsNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("user in call: %w", err)
	}
	return true, nil
}

// GetCall returns a call of one of the caller's conversations.
func (s *callsService) GetCall(ctx context.Context, req *parleyv1.GetCallRequest) (*parleyv1.GetCallResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.expireStale(ctx); err != nil {
		return nil, err
	}
	var out *parleyv1.Call
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		call, err := q.GetCall(ctx, req.GetCallId())
		if db.IsNoRows(err) {
			return errCallNotFound
		}
		if err != nil {
			return fmt.Errorf("get call: %w", err)
		}
		me, err := q.GetMembership(ctx, db.GetMembershipParams{ConversationID: call.ConversationID, UserID: c.UserID})
		if db.IsNoRows(err) || (err == nil && me.LeftSeq != nil) {
			return errCallNotFound
		}
		if err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		parts, err := q.ListCallParticipants(ctx, call.ID)
		if err != nil {
			return fmt.Errorf("list call participants: %w", err)
		}
		out = callToProtoFor(call, parts, me.Kind, []string{c.UserID})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out.GetState() != parleyv1.CallState_CALL_STATE_ENDED && s.nodes.clustered() && !forwarded(ctx) {
		// The tracks and their mute state are known where the room is.
		if url, err := s.nodes.owner(ctx, out.GetId(), false); err == nil && url != "" {
			res, err := s.nodes.client(url).GetCall(forwardContext(ctx), req)
			if err == nil {
				return res, nil
			}
			s.logger.WarnContext(ctx, "get a call from the node hosting it", "call_id", out.GetId(), "error", err)
		}
	}
	return &parleyv1.GetCallResponse{Call: s.withTracks(out)}, nil
}

// AnswerCall joins the caller to a call they are rung for, or to a group
// call in progress.
func (s *callsService) AnswerCall(ctx context.Context, req *parleyv1.AnswerCallRequest) (*parleyv1.AnswerCallResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.expireStale(ctx); err != nil {
		return nil, err
	}
	ct, err := s.change(ctx, req.GetCallId(), c.UserID, func(ct *callTx) error {
		if ct.call.State == callEnded {
			return errCallEnded
		}
		me, ok := ct.participant(c.UserID)
		switch {
		case ok && me.State == partJoined:
			return errAlreadyInCall
		case ct.conv.Kind == kindDirect && (ct.call.State != callRinging || !ok || me.State != partInvited):
			return errCallNotRinging
		}
		limit := maxAudioCallJoined
		if ct.call.Kind == int16(parleyv1.CallKind_CALL_KIND_VIDEO) {
			limit = maxVideoCallJoined
		}
		if ct.count(partJoined) >= limit {
			return errCallFull
		}
		if busy, err := inCall(ctx, ct.q, c.UserID); err != nil {
			return err
		} else if busy {
			return errInAnotherCall
		}
		if err := ct.q.AnswerCallRow(ctx, ct.call.ID); err != nil {
			return fmt.Errorf("answer call: %w", err)
		}
		return ct.set(ctx, c.UserID, partJoined)
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.AnswerCallResponse{
		Call:       callToProto(ct.call, ct.parts, ct.conv.Kind),
		IceServers: iceServers(s.cfg.ICE, c.UserID, time.Now()),
	}, nil
}

// DeclineCall refuses a call the caller is rung for. A direct call ends as
// declined; a group call ends so only when every member rung declined before
// anyone answered.
func (s *callsService) DeclineCall(ctx context.Context, req *parleyv1.DeclineCallRequest) (*parleyv1.DeclineCallResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	ct, err := s.change(ctx, req.GetCallId(), c.UserID, func(ct *callTx) error {
		if me, ok := ct.participant(c.UserID); !ok || me.State != partInvited || ct.call.State == callEnded {
			return errNotInvited
		}
		if err := ct.set(ctx, c.UserID, partDeclined); err != nil {
			return err
		}
		if ct.conv.Kind == kindDirect || (ct.call.State == callRinging && ct.count(partInvited) == 0) {
			return ct.end(ctx, parleyv1.CallOutcome_CALL_OUTCOME_DECLINED)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.DeclineCallResponse{Call: callToProto(ct.call, ct.parts, ct.conv.Kind)}, nil
}

// HangUp takes the caller out of a call. The initiator hanging up before
// anyone answered cancels it; a direct call in progress ends when either
// side hangs up, a group call when its last participant does.
func (s *callsService) HangUp(ctx context.Context, req *parleyv1.HangUpRequest) (*parleyv1.HangUpResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	ct, err := s.leave(ctx, req.GetCallId(), c.UserID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.HangUpResponse{Call: callToProto(ct.call, ct.parts, ct.conv.Kind)}, nil
}

// leave takes userID out of a call, ending it when that leaves it empty.
func (s *callsService) leave(ctx context.Context, callID, userID string) (*callTx, error) {
	return s.change(ctx, callID, userID, func(ct *callTx) error { return ct.leave(ctx, userID) })
}

// leaveAfterGrace is the grace timer of a Signals stream that dropped: its
// participant, who did not open another in time, leaves the call.
func (s *callsService) leaveAfterGrace(ctx context.Context, key string) {
	callID, userID, _ := strings.Cut(key, "/")
	if _, err := s.leave(ctx, callID, userID); err != nil && ctx.Err() == nil && !errors.Is(err, errCallNotFound) {
		s.logger.ErrorContext(ctx, "leave a call after its stream dropped", "call_id", callID, "user_id", userID, "error", err)
	}
}

// GetIceServers returns the STUN and TURN servers with fresh credentials.
func (s *callsService) GetIceServers(ctx context.Context, _ *parleyv1.GetIceServersRequest) (*parleyv1.GetIceServersResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	return &parleyv1.GetIceServersResponse{IceServers: iceServers(s.cfg.ICE, c.UserID, time.Now())}, nil
}

// iceServers builds the ICE servers for userID. TURN credentials follow the
// TURN REST API scheme that coturn's use-auth-secret checks: the user name is
// "<expiry unix time>:<user id>" and the password base64(HMAC-SHA1(secret,
// user name)), so the TURN server needs no call to Parley to verify them.
func iceServers(cfg ICEConfig, userID string, now time.Time) []*parleyv1.IceServer {
	var out []*parleyv1.IceServer
	if len(cfg.STUNURLs) > 0 {
		out = append(out, &parleyv1.IceServer{Urls: cfg.STUNURLs})
	}
	if len(cfg.TURNURLs) > 0 && cfg.TURNSecret != "" {
		expiry := now.Add(cfg.TURNTTL).Truncate(time.Second)
		username := strconv.FormatInt(expiry.Unix(), 10) + ":" + userID
		mac := hmac.New(sha1.New, []byte(cfg.TURNSecret))
		mac.Write([]byte(username)) // a hash.Hash never fails to write
		out = append(out, &parleyv1.IceServer{
			Urls:       cfg.TURNURLs,
			Username:   username,
			Credential: base64.StdEncoding.EncodeToString(mac.Sum(nil)),
			ExpireTime: timestamppb.New(expiry),
		})
	}
	return out
}

// ListCalls lists the calls the caller started or was rung for, newest first.
func (s *callsService) ListCalls(ctx context.Context, req *parleyv1.ListCallsRequest) (*parleyv1.ListCallsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.expireStale(ctx); err != nil {
		return nil, err
	}
	p := db.ListUserCallsParams{UserID: c.UserID, MaxRows: int32(cmpOr(int(req.GetPageSize()), defaultListCalls)) + 1}
	if id := req.GetConversationId(); id != "" {
		me, err := s.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: id, UserID: c.UserID})
		if db.IsNoRows(err) {
			return nil, errConversationNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("get membership: %w", err)
		}
		p.ConversationID = &me.ConversationID
	}
	if p.BeforeStarted, p.BeforeID, err = parsePageToken(req.GetPageToken()); err != nil {
		return nil, err
	}
	calls, err := s.db.ListUserCalls(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list calls: %w", err)
	}
	res := &parleyv1.ListCallsResponse{}
	if len(calls) == int(p.MaxRows) {
		calls = calls[:len(calls)-1]
		last := calls[len(calls)-1]
		res.NextPageToken = pageToken(last.StartedAt, last.ID)
	}
	ids := make([]string, 0, len(calls))
	convs := make([]string, 0, len(calls))
	for _, call := range calls {
		ids = append(ids, call.ID)
		convs = append(convs, call.ConversationID)
	}
	parts, err := s.db.ListCallParticipantsOf(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("list call participants: %w", err)
	}
	kinds, err := s.conversationKinds(ctx, convs)
	if err != nil {
		return nil, err
	}
	for _, call := range calls {
		mine := slices.DeleteFunc(slices.Clone(parts), func(p db.CallParticipant) bool { return p.CallID != call.ID })
		res.Calls = append(res.Calls, callToProto(call, mine, kinds[call.ConversationID]))
	}
	return res, nil
}

func (s *callsService) conversationKinds(ctx context.Context, ids []string) (map[string]int16, error) {
	rows, err := s.db.ConversationKinds(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("conversation kinds: %w", err)
	}
	out := make(map[string]int16, len(rows))
	for _, r := range rows {
		out[r.ID] = r.Kind
	}
	return out, nil
}

// callToProto converts a call and its participants. A group call lists only
// the members who answered or declined, not those still (or never) rung.
func callToProto(call db.Call, parts []db.CallParticipant, convKind int16) *parleyv1.Call {
	return callToProtoFor(call, parts, convKind, nil)
}

// callToProtoFor is callToProto that also lists the viewers' own
// participants in a group call whatever their state: a member learns that
// they are still rung, or that their ringing stopped.
func callToProtoFor(call db.Call, parts []db.CallParticipant, convKind int16, viewers []string) *parleyv1.Call {
	out := &parleyv1.Call{
		Id:             call.ID,
		ConversationId: call.ConversationID,
		Kind:           parleyv1.CallKind(call.Kind),
		State:          parleyv1.CallState(call.State),
		Outcome:        parleyv1.CallOutcome(call.Outcome),
		StartTime:      timestamppb.New(call.StartedAt),
		Duration:       durationpb.New(0),
	}
	if call.InitiatorID != nil {
		out.InitiatorId = *call.InitiatorID
	}
	if call.AnsweredAt != nil {
		out.AnswerTime = timestamppb.New(*call.AnsweredAt)
	}
	if call.EndedAt != nil {
		out.EndTime = timestamppb.New(*call.EndedAt)
		if call.AnsweredAt != nil {
			out.Duration = durationpb.New(call.EndedAt.Sub(*call.AnsweredAt))
		}
	}
	for _, p := range parts {
		if convKind != kindDirect && (p.State == partInvited || p.State == partMissed) && !slices.Contains(viewers, p.UserID) {
			continue
		}
		cp := &parleyv1.CallParticipant{UserId: p.UserID, State: parleyv1.CallParticipantState(p.State)}
		if p.JoinedAt != nil {
			cp.JoinTime = timestamppb.New(*p.JoinedAt)
		}
		if p.LeftAt != nil && p.State != partJoined {
			cp.LeaveTime = timestamppb.New(*p.LeftAt)
		}
		out.Participants = append(out.Participants, cp)
	}
	return out
}
