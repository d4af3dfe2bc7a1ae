package server_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func (e *env) calls(opts ...connect.ClientOption) parleyv1connect.CallsServiceClient {
	return parleyv1connect.NewCallsServiceClient(e.client, e.srv.URL, opts...)
}

func startCall(t testing.TB, c parleyv1connect.CallsServiceClient, who account, convID string, kind parleyv1.CallKind) *parleyv1.Call {
	t.Helper()
	res, err := c.StartCall(who.ctx(), &parleyv1.StartCallRequest{ConversationId: convID, Kind: kind})
	if err != nil {
		t.Fatalf("StartCall(%s): %v", who.user.GetUsername(), err)
	}
	return res.GetCall()
}

// callEvent returns a matcher of the CallEvent about callID that pick
// returns non-nil for.
func callEvent(callID string, pick func(*parleyv1.CallEvent) *parleyv1.Call) func(*parleyv1.SubscribeResponse) bool {
	return func(ev *parleyv1.SubscribeResponse) bool {
		return pick(ev.GetCall()).GetId() == callID
	}
}

func ringing(ev *parleyv1.CallEvent) *parleyv1.Call { return ev.GetIncoming() }
func updated(ev *parleyv1.CallEvent) *parleyv1.Call { return ev.GetUpdated() }
func ended(ev *parleyv1.CallEvent) *parleyv1.Call   { return ev.GetEnded() }

// lastEntry returns the newest entry of a conversation that who sees.
func lastEntry(t testing.TB, e *env, who account, convID string) *parleyv1.Message {
	t.Helper()
	res, err := e.msgs().ListMessages(who.ctx(), &parleyv1.ListMessagesRequest{ConversationId: convID, Limit: 200})
	if err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	msgs := res.GetMessages()
	if len(msgs) == 0 {
		t.Fatal("empty log")
	}
	return msgs[len(msgs)-1]
}

// wantCallEnded checks that the newest entry of convID records callID's end
// with outcome, and returns it.
func wantCallEnded(t testing.TB, e *env, who account, convID, callID string, outcome parleyv1.CallOutcome) *parleyv1.CallEnded {
	t.Helper()
	got := lastEntry(t, e, who, convID).GetSystem().GetCallEnded()
	if got.GetCallId() != callID || got.GetOutcome() != outcome {
		t.Fatalf("last entry records call %q outcome %v; want %s %v", got.GetCallId(), got.GetOutcome(), callID, outcome)
	}
	return got
}

func participantState(call *parleyv1.Call, userID string) parleyv1.CallParticipantState {
	for _, p := range call.GetParticipants() {
		if p.GetUserId() == userID {
			return p.GetState()
		}
	}
	return parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_UNSPECIFIED
}

func TestCallAnsweredThenHungUpEndsWithItsDuration(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		calls := e.calls(opts...)
		alice, bob, conv := e.pair("alice", "bob")
		bobs, _ := rpcSubscribe(t, e.msgs(opts...), bob)
		alices, _ := rpcSubscribe(t, e.msgs(opts...), alice)

		call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_VIDEO)
		if call.GetState() != parleyv1.CallState_CALL_STATE_RINGING || call.GetInitiatorId() != alice.user.GetId() ||
			participantState(call, alice.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED ||
			participantState(call, bob.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_INVITED {
			t.Fatalf("StartCall gave %v; want ringing with alice joined and bob invited", call)
		}
		evs := untilEvent(t, bobs, callEvent(call.GetId(), ringing))
		if got := evs[len(evs)-1].GetCall().GetIncoming(); got.GetKind() != parleyv1.CallKind_CALL_KIND_VIDEO {
			t.Errorf("incoming call kind %v, want video", got.GetKind())
		}
		untilEvent(t, alices, callEvent(call.GetId(), updated))
		activeCall := func() string {
			t.Helper()
			res, err := e.msgs(opts...).GetConversation(bob.ctx(), &parleyv1.GetConversationRequest{ConversationId: conv})
			if err != nil {
				t.Fatalf("GetConversation: %v", err)
			}
			return res.GetConversation().GetActiveCallId()
		}
		if got := activeCall(); got != call.GetId() {
			t.Errorf("active_call_id %q while ringing; want %s", got, call.GetId())
		}

		ans, err := calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
		if err != nil {
			t.Fatalf("AnswerCall: %v", err)
		}
		if ans.GetCall().GetState() != parleyv1.CallState_CALL_STATE_ACTIVE || ans.GetCall().GetAnswerTime() == nil {
			t.Fatalf("AnswerCall gave %v; want active with an answer time", ans.GetCall())
		}
		untilEvent(t, alices, callEvent(call.GetId(), updated))
		// A second answer (another device of bob's) is refused.
		_, err = calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
		wantCode(t, err, connect.CodeFailedPrecondition)

		time.Sleep(100 * time.Millisecond)
		hung, err := calls.HangUp(alice.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()})
		if err != nil {
			t.Fatalf("HangUp: %v", err)
		}
		got := hung.GetCall()
		if got.GetState() != parleyv1.CallState_CALL_STATE_ENDED || got.GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED ||
			got.GetDuration().AsDuration() < 100*time.Millisecond {
			t.Fatalf("HangUp gave %v; want ended, completed, lasting at least 100ms", got)
		}
		entry := wantCallEnded(t, e, bob, conv, call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED)
		if entry.GetDuration().AsDuration() != got.GetDuration().AsDuration() || entry.GetInitiatorId() != alice.user.GetId() ||
			entry.GetKind() != parleyv1.CallKind_CALL_KIND_VIDEO {
			t.Errorf("CallEnded entry %v; want the call's duration %v, alice as initiator, video", entry, got.GetDuration().AsDuration())
		}
		// Bob's stream hears the end, then the entry that records it.
		untilEvent(t, bobs, callEvent(call.GetId(), ended))
		if ev := untilEvent(t, bobs, func(ev *parleyv1.SubscribeResponse) bool { return ev.GetMessage() != nil }); ev[len(ev)-1].GetMessage().GetSystem().GetCallEnded().GetCallId() != call.GetId() {
			t.Errorf("after the ended event came %v; want the CallEnded entry", ev[len(ev)-1])
		}
		if got := activeCall(); got != "" {
			t.Errorf("active_call_id %q after the call ended; want none", got)
		}
		// Hanging up an ended call returns it unchanged.
		again, err := calls.HangUp(bob.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()})
		if err != nil || again.GetCall().GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED {
			t.Errorf("HangUp of an ended call: %v, %v; want it unchanged", again.GetCall(), err)
		}
		// Nothing about the call but its entry went into the log.
		log, err := e.msgs().ListMessages(alice.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv, Limit: 200})
		if err != nil || len(log.GetMessages()) != 2 {
			t.Errorf("the log holds %d entries (%v); want the first text and the CallEnded entry", len(log.GetMessages()), err)
		}
	})
}

func TestCallDeclinedAndCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	calls := e.calls()
	alice, bob, conv := e.pair("alice", "bob")

	call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	// Only an invited participant declines.
	_, err := calls.DeclineCall(alice.ctx(), &parleyv1.DeclineCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	dec, err := calls.DeclineCall(bob.ctx(), &parleyv1.DeclineCallRequest{CallId: call.GetId()})
	if err != nil {
		t.Fatalf("DeclineCall: %v", err)
	}
	if got := dec.GetCall(); got.GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_DECLINED ||
		participantState(got, bob.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_DECLINED ||
		participantState(got, alice.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT {
		t.Fatalf("DeclineCall gave %v; want declined, bob declined, alice left", got)
	}
	if d := wantCallEnded(t, e, alice, conv, call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_DECLINED).GetDuration().AsDuration(); d != 0 {
		t.Errorf("declined call lasted %v; want 0", d)
	}

	call = startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	hung, err := calls.HangUp(alice.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()})
	if err != nil {
		t.Fatalf("HangUp: %v", err)
	}
	if hung.GetCall().GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_CANCELLED {
		t.Fatalf("the caller hanging up first gave %v; want cancelled", hung.GetCall())
	}
	wantCallEnded(t, e, bob, conv, call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_CANCELLED)
	_, err = calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = calls.DeclineCall(bob.ctx(), &parleyv1.DeclineCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func TestCallUnansweredIsMissed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.CallRingTimeout = 300 * time.Millisecond })
	calls := e.calls()
	alice, bob, conv := e.pair("alice", "bob")
	bobs, _ := rpcSubscribe(t, e.msgs(), bob)

	call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_VIDEO)
	untilEvent(t, bobs, callEvent(call.GetId(), ringing))
	evs := untilEvent(t, bobs, callEvent(call.GetId(), ended))
	got := evs[len(evs)-1].GetCall().GetEnded()
	if got.GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_MISSED ||
		participantState(got, bob.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_MISSED {
		t.Fatalf("ended event %v; want missed, with bob missed", got)
	}
	if d := got.GetEndTime().AsTime().Sub(got.GetStartTime().AsTime()); d < 300*time.Millisecond {
		t.Errorf("the call rang %v; want the 300ms timeout", d)
	}
	wantCallEnded(t, e, alice, conv, call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_MISSED)
	_, err := calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

// The database is the record: a call whose node never ends it (its timer is
// far off, as if lost) is missed by a node that starts afterwards, and on
// reading once it rang past the timeout.
func TestCallRingingPastTheTimeoutIsMissedWithoutItsTimer(t *testing.T) {
	t.Parallel()
	first := newEnv(t, func(c *server.Config) { c.CallRingTimeout = time.Hour })
	alice, bob, conv := first.pair("alice", "bob")
	call := startCall(t, first.calls(), alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)

	time.Sleep(250 * time.Millisecond)
	second := newEnvOn(t, first.db, func(c *server.Config) { c.CallRingTimeout = 200 * time.Millisecond })
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := second.calls().GetCall(bob.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
		if err != nil {
			t.Fatalf("GetCall: %v", err)
		}
		if res.GetCall().GetOutcome() == parleyv1.CallOutcome_CALL_OUTCOME_MISSED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the call is still %v", res.GetCall())
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantCallEnded(t, first, alice, conv, call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_MISSED)

	// A call that rang past its time is missed when read, timer or not.
	call = startCall(t, first.calls(), alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	time.Sleep(250 * time.Millisecond)
	res, err := second.calls().ListCalls(alice.ctx(), &parleyv1.ListCallsRequest{ConversationId: conv})
	if err != nil {
		t.Fatalf("ListCalls: %v", err)
	}
	if got := res.GetCalls()[0]; got.GetId() != call.GetId() || got.GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_MISSED {
		t.Fatalf("newest call %v; want %s missed", got, call.GetId())
	}
}

func TestCallBusy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	calls := e.calls()
	alice, bob, ab := e.pair("alice", "bob")
	carol := e.signUp("carol")
	sent, err := e.msgs().Send(carol.ctx(), text(alice.user.GetId(), "hi", ""))
	if err != nil {
		t.Fatal(err)
	}
	ca := sent.GetConversationId()

	call := startCall(t, calls, alice, ab, parleyv1.CallKind_CALL_KIND_AUDIO)
	// Bob is only being rung: carol's call to alice finds alice busy.
	_, err = calls.StartCall(carol.ctx(), &parleyv1.StartCallRequest{ConversationId: ca, Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("error %v does not say busy", err)
	}
	// Alice is in a call and may not start another one.
	_, err = calls.StartCall(alice.ctx(), &parleyv1.StartCallRequest{ConversationId: ca, Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodeFailedPrecondition)
	// The conversation has its call already.
	_, err = calls.StartCall(bob.ctx(), &parleyv1.StartCallRequest{ConversationId: ab, Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodeAlreadyExists)
	if n := e.count("calls"); n != 1 {
		t.Errorf("%d calls stored; want the one that rings", n)
	}
	// Carol may ring bob, who is not in a call yet; once bob answers her, he
	// is busy for alice's call.
	cb, err := e.msgs().Send(carol.ctx(), text(bob.user.GetId(), "hi", ""))
	if err != nil {
		t.Fatal(err)
	}
	carolCall := startCall(t, calls, carol, cb.GetConversationId(), parleyv1.CallKind_CALL_KIND_AUDIO)
	if _, err := calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: carolCall.GetId()}); err != nil {
		t.Fatalf("AnswerCall: %v", err)
	}
	_, err = calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func TestCallOutsidersAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	calls := e.calls()
	alice, bob, conv := e.pair("alice", "bob")
	mallory := e.signUp("mallory")

	_, err := calls.StartCall(mallory.ctx(), &parleyv1.StartCallRequest{ConversationId: conv, Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodeNotFound)
	_, err = calls.StartCall(alice.ctx(), &parleyv1.StartCallRequest{ConversationId: alice.accountConv, Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = calls.StartCall(mallory.ctx(), &parleyv1.StartCallRequest{ConversationId: alice.accountConv, Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodeNotFound)

	call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	id := call.GetId()
	for name, do := range map[string]func() error{
		"GetCall": func() error { _, err := calls.GetCall(mallory.ctx(), &parleyv1.GetCallRequest{CallId: id}); return err },
		"AnswerCall": func() error {
			_, err := calls.AnswerCall(mallory.ctx(), &parleyv1.AnswerCallRequest{CallId: id})
			return err
		},
		"DeclineCall": func() error {
			_, err := calls.DeclineCall(mallory.ctx(), &parleyv1.DeclineCallRequest{CallId: id})
			return err
		},
		"HangUp": func() error { _, err := calls.HangUp(mallory.ctx(), &parleyv1.HangUpRequest{CallId: id}); return err },
		"Signal": func() error {
			_, err := calls.Signal(mallory.ctx(), &parleyv1.SignalRequest{CallId: id, Signal: &parleyv1.SignalRequest_RestartIce{RestartIce: &parleyv1.RestartIce{}}})
			return err
		},
		"Signals": func() error {
			stream, err := calls.Signals(mallory.ctx(), &parleyv1.SignalsRequest{CallId: id})
			if err != nil {
				return err
			}
			defer stream.Close()
			if stream.Receive() {
				t.Errorf("an outsider's Signals got %v", stream.Msg())
			}
			return stream.Err()
		},
		"ListCalls": func() error {
			_, err := calls.ListCalls(mallory.ctx(), &parleyv1.ListCallsRequest{ConversationId: conv})
			return err
		},
	} {
		if err := do(); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s by an outsider: %v; want NotFound", name, err)
		}
	}
	res, err := calls.ListCalls(mallory.ctx(), &parleyv1.ListCallsRequest{})
	if err != nil || len(res.GetCalls()) != 0 {
		t.Errorf("an outsider's ListCalls: %v, %v; want nothing", res.GetCalls(), err)
	}
	// The call is untouched.
	got, err := calls.GetCall(bob.ctx(), &parleyv1.GetCallRequest{CallId: id})
	if err != nil || got.GetCall().GetState() != parleyv1.CallState_CALL_STATE_RINGING || len(got.GetCall().GetParticipants()) != 2 {
		t.Errorf("GetCall(bob): %v, %v; want it ringing with its two participants", got.GetCall(), err)
	}
}

func TestCallInAGroup(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	calls := ge.calls()
	owner, ann, ben, cat, dan := ge.signUp("owner"), ge.signUp("ann"), ge.signUp("ben"), ge.signUp("cat"), ge.signUp("dan")
	g := ge.create(t, owner, "team", ann, ben, cat, dan)
	_, err := ge.g.LeaveGroup(dan.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g.GetId()})
	ge.must(t, "LeaveGroup", err)
	_, err = calls.StartCall(dan.ctx(), &parleyv1.StartCallRequest{ConversationId: g.GetId(), Kind: parleyv1.CallKind_CALL_KIND_AUDIO})
	wantCode(t, err, connect.CodePermissionDenied)
	bens, _ := rpcSubscribe(t, ge.m, ben)
	cats, _ := rpcSubscribe(t, ge.m, cat)
	dans, _ := rpcSubscribe(t, ge.m, dan)

	call := startCall(t, calls, ann, g.GetId(), parleyv1.CallKind_CALL_KIND_AUDIO)
	if n := len(call.GetParticipants()); n != 1 {
		t.Errorf("a new group call lists %d participants; want the initiator only", n)
	}
	untilEvent(t, bens, callEvent(call.GetId(), ringing))
	untilEvent(t, cats, callEvent(call.GetId(), ringing))
	_, err = calls.GetCall(dan.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeNotFound)

	answer := func(who account) *parleyv1.Call {
		t.Helper()
		res, err := calls.AnswerCall(who.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
		if err != nil {
			t.Fatalf("AnswerCall(%s): %v", who.user.GetUsername(), err)
		}
		return res.GetCall()
	}
	hangUp := func(who account) *parleyv1.Call {
		t.Helper()
		res, err := calls.HangUp(who.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()})
		if err != nil {
			t.Fatalf("HangUp(%s): %v", who.user.GetUsername(), err)
		}
		return res.GetCall()
	}
	if got := answer(ben); got.GetState() != parleyv1.CallState_CALL_STATE_ACTIVE {
		t.Fatalf("after ben answered: %v; want active", got)
	}
	ev := untilEvent(t, cats, callEvent(call.GetId(), updated))
	if got := ev[len(ev)-1].GetCall().GetUpdated(); participantState(got, ben.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED {
		t.Errorf("cat heard %v; want ben joined", got)
	}
	dec, err := calls.DeclineCall(owner.ctx(), &parleyv1.DeclineCallRequest{CallId: call.GetId()})
	ge.must(t, "DeclineCall", err)
	if dec.GetCall().GetState() != parleyv1.CallState_CALL_STATE_ACTIVE {
		t.Errorf("a group member declining ended the call: %v", dec.GetCall())
	}
	// The initiator leaving ends nothing while others remain; they may come back.
	if got := hangUp(ann); got.GetState() != parleyv1.CallState_CALL_STATE_ACTIVE {
		t.Fatalf("after ann left: %v; want active", got)
	}
	answer(cat)
	answer(ann)
	hangUp(ben)
	hangUp(ann)
	got := hangUp(cat)
	if got.GetState() != parleyv1.CallState_CALL_STATE_ENDED || got.GetOutcome() != parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED || got.GetDuration().AsDuration() <= 0 {
		t.Fatalf("after the last participant left: %v; want ended, completed, with a duration", got)
	}
	for user, want := range map[string]parleyv1.CallParticipantState{
		ann.user.GetId():   parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT,
		ben.user.GetId():   parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT,
		cat.user.GetId():   parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT,
		owner.user.GetId(): parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_DECLINED,
	} {
		if s := participantState(got, user); s != want {
			t.Errorf("participant %s is %v; want %v", user, s, want)
		}
	}
	wantCallEnded(t, ge.env, owner, g.GetId(), call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED)
	untilEvent(t, bens, callEvent(call.GetId(), ended))
	// The former member heard nothing of it: a direct message after the
	// call is the first thing his stream gets.
	direct, err := ge.m.Send(ann.ctx(), text(dan.user.GetId(), "after the call", ""))
	ge.must(t, "Send", err)
	first := func(ev *parleyv1.SubscribeResponse) bool {
		return addedConversation(direct.GetConversationId())(ev) || ev.GetMessage().GetConversationId() == direct.GetConversationId()
	}
	for _, ev := range untilEvent(t, dans, first) {
		if ev.GetCall() != nil || ev.GetMessage().GetConversationId() == g.GetId() {
			t.Errorf("dan, who left the group, got %v", ev)
		}
	}

	// A participant who leaves the group during a call is out of it at once
	// (then the call is no longer his to see), and free for other calls.
	call = startCall(t, calls, ann, g.GetId(), parleyv1.CallKind_CALL_KIND_AUDIO)
	answer(ben)
	_, err = ge.g.LeaveGroup(ben.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g.GetId()})
	ge.must(t, "LeaveGroup", err)
	res, err := calls.GetCall(ann.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	ge.must(t, "GetCall", err)
	if got := res.GetCall(); participantState(got, ben.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT ||
		got.GetState() != parleyv1.CallState_CALL_STATE_ACTIVE {
		t.Errorf("after ben left the group: %v; want him left and the call going on", got)
	}
	_, err = calls.HangUp(ben.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeNotFound)
	_, err = calls.GetCall(ben.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	wantCode(t, err, connect.CodeNotFound)
	hangUp(ann)

	// A group call everyone rung declines ends as declined.
	call = startCall(t, calls, ann, g.GetId(), parleyv1.CallKind_CALL_KIND_VIDEO)
	for _, who := range []account{owner, cat} {
		_, err := calls.DeclineCall(who.ctx(), &parleyv1.DeclineCallRequest{CallId: call.GetId()})
		ge.must(t, "DeclineCall", err)
	}
	wantCallEnded(t, ge.env, ann, g.GetId(), call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_DECLINED)
}

func TestCallListCalls(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	calls := e.calls()
	alice, bob, ab := e.pair("alice", "bob")
	carol := e.signUp("carol")
	sent, err := e.msgs().Send(carol.ctx(), text(alice.user.GetId(), "hi", ""))
	if err != nil {
		t.Fatal(err)
	}
	var want []string // newest first
	for _, conv := range []string{ab, sent.GetConversationId(), ab} {
		call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
		if _, err := calls.HangUp(alice.ctx(), &parleyv1.HangUpRequest{CallId: call.GetId()}); err != nil {
			t.Fatal(err)
		}
		want = append([]string{call.GetId()}, want...)
	}
	list := func(who account, req *parleyv1.ListCallsRequest) []string {
		t.Helper()
		var got []string
		for {
			res, err := calls.ListCalls(who.ctx(), req)
			if err != nil {
				t.Fatalf("ListCalls: %v", err)
			}
			for _, c := range res.GetCalls() {
				got = append(got, c.GetId())
			}
			if res.GetNextPageToken() == "" {
				return got
			}
			req.PageToken = res.GetNextPageToken()
		}
	}
	if got := list(alice, &parleyv1.ListCallsRequest{PageSize: 2}); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("alice's calls %v; want %v", got, want)
	}
	if got := list(bob, &parleyv1.ListCallsRequest{PageSize: 1}); strings.Join(got, ",") != want[0]+","+want[2] {
		t.Errorf("bob's calls %v; want %v", got, []string{want[0], want[2]})
	}
	if got := list(alice, &parleyv1.ListCallsRequest{ConversationId: sent.GetConversationId()}); strings.Join(got, ",") != want[1] {
		t.Errorf("alice's calls with carol %v; want %v", got, want[1])
	}
	_, err = calls.ListCalls(alice.ctx(), &parleyv1.ListCallsRequest{PageToken: "garbage"})
	wantCode(t, err, connect.CodeInvalidArgument)
}

func TestCallIceServersCarryTURNRESTCredentials(t *testing.T) {
	t.Parallel()
	const secret = "coturn static-auth-secret"
	e := newEnv(t, func(c *server.Config) {
		c.ICE = server.ICEConfig{
			STUNURLs:   []string{"stun:turn.example.com:3478"},
			TURNURLs:   []string{"turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349"},
			TURNSecret: secret,
			TURNTTL:    time.Hour,
		}
	})
	alice := e.signUp("alice")
	res, err := e.calls().GetIceServers(alice.ctx(), &parleyv1.GetIceServersRequest{})
	if err != nil {
		t.Fatalf("GetIceServers: %v", err)
	}
	servers := res.GetIceServers()
	if len(servers) != 2 || servers[0].GetUrls()[0] != "stun:turn.example.com:3478" || servers[0].GetUsername() != "" {
		t.Fatalf("got %v; want a STUN server without credentials, then the TURN servers", servers)
	}
	turn := servers[1]
	if len(turn.GetUrls()) != 2 {
		t.Errorf("TURN urls %v; want both", turn.GetUrls())
	}
	expiry, user, ok := strings.Cut(turn.GetUsername(), ":")
	unix, err := strconv.ParseInt(expiry, 10, 64)
	if !ok || err != nil || user != alice.user.GetId() {
		t.Fatalf("TURN username %q; want <expiry>:%s", turn.GetUsername(), alice.user.GetId())
	}
	if d := time.Until(time.Unix(unix, 0)); d < 59*time.Minute || d > time.Hour+time.Second || turn.GetExpireTime().AsTime().Unix() != unix {
		t.Errorf("credential expires in %v at %v; want an hour, as the username says", d, turn.GetExpireTime().AsTime())
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(turn.GetUsername()))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); turn.GetCredential() != want {
		t.Errorf("TURN credential %q; want base64(HMAC-SHA1(secret, username)) %q", turn.GetCredential(), want)
	}
}
