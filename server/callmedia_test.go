package server_test

import (
	"testing"
	"time"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/rtc"
	"github.com/parley-chat/parley/server"
)

const (
	mic    = parleyv1.TrackSource_TRACK_SOURCE_MICROPHONE
	camera = parleyv1.TrackSource_TRACK_SOURCE_CAMERA
	screen = parleyv1.TrackSource_TRACK_SOURCE_SCREEN
)

func loopbackRTC(c *server.Config) { c.RTC = rtc.Config{Loopback: true, UDPAddr: "127.0.0.1:0"} }

// waitSources waits until every peer received at least n packets on each
// (publisher, source) track listed for it.
func waitSources(t testing.TB, within time.Duration, n int, want map[*peer]map[string][]parleyv1.TrackSource) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		short := ""
		for p, froms := range want {
			for from, srcs := range froms {
				for _, src := range srcs {
					if got := p.receivedSource(from, src); got < n && short == "" {
						short = p.who.user.GetUsername() + " got " + itoa(got) + " " + src.String() + " packets from " + from
					}
				}
			}
		}
		if short == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; want %d", within, short, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func unpublished(userID string, src parleyv1.TrackSource) func(*parleyv1.SignalsResponse) bool {
	return func(m *parleyv1.SignalsResponse) bool {
		u := m.GetTrackUnpublished()
		return u.GetUserId() == userID && u.GetSource() == src
	}
}

func TestCallVideoWithAScreenShareReachesTheOtherSide(t *testing.T) {
	t.Parallel()
	e := newEnv(t, loopbackRTC)
	calls := e.calls()
	alice, bob, conv := e.pair("alice", "bob")
	call := startCall(t, calls, alice, conv, parleyv1.CallKind_CALL_KIND_VIDEO)
	if _, err := calls.AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	a := newPeerSending(t, calls, alice, call.GetId(), mic, camera)
	b := newPeerSending(t, calls, bob, call.GetId(), mic, camera)
	waitSources(t, 5*time.Second, 10, map[*peer]map[string][]parleyv1.TrackSource{
		a: {bob.user.GetId(): {mic, camera}},
		b: {alice.user.GetId(): {mic, camera}},
	})

	// Alice shares her screen: Bob gets a third track, labelled as the screen.
	a.send(screen, true)
	b.until(5*time.Second, "screen track", func(m *parleyv1.SignalsResponse) bool {
		tp := m.GetTrackPublished()
		return tp.GetUserId() == alice.user.GetId() && tp.GetSource() == screen
	})
	waitSources(t, 5*time.Second, 10, map[*peer]map[string][]parleyv1.TrackSource{b: {alice.user.GetId(): {screen}}})
	res, err := calls.GetCall(bob.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got := sourcesOf(res.GetCall(), alice.user.GetId()); len(got) != 3 || got[2] != screen {
		t.Errorf("while sharing, alice publishes %v; want microphone, camera and screen", got)
	}

	// She stops: the track is gone within 2 s, the camera stays.
	stopped := time.Now()
	a.send(screen, false)
	b.until(2*time.Second, "screen unpublished", unpublished(alice.user.GetId(), screen))
	t.Logf("screen unpublished to the other side in %v", time.Since(stopped))
	before := b.receivedSource(alice.user.GetId(), camera)
	waitSources(t, 2*time.Second, before+10, map[*peer]map[string][]parleyv1.TrackSource{b: {alice.user.GetId(): {camera}}})
	res, err = calls.GetCall(bob.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got := sourcesOf(res.GetCall(), alice.user.GetId()); len(got) != 2 {
		t.Errorf("after sharing, alice publishes %v; want microphone and camera", got)
	}
}

// sourcesOf returns the sources userID publishes in call, in order.
func sourcesOf(call *parleyv1.Call, userID string) []parleyv1.TrackSource {
	var out []parleyv1.TrackSource
	for _, p := range call.GetParticipants() {
		if p.GetUserId() == userID {
			for _, tr := range p.GetTracks() {
				out = append(out, tr.GetSource())
			}
		}
	}
	return out
}

func TestCallMuteReachesTheOthersAndTheCallState(t *testing.T) {
	t.Parallel()
	n1, n2, _ := callNodes(t)
	alice, bob, conv := n1.pair("alice", "bob")
	call := startCall(t, n1.calls(), alice, conv, parleyv1.CallKind_CALL_KIND_AUDIO)
	if _, err := n2.calls().AnswerCall(bob.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()}); err != nil {
		t.Fatal(err)
	}
	a := newPeer(t, n1.calls(), alice, call.GetId())
	b := newPeer(t, n2.calls(), bob, call.GetId()) // through node 2 to the room on node 1
	waitMedia(t, 10*time.Second, 10, map[*peer][]string{a: {bob.user.GetId()}, b: {alice.user.GetId()}})

	mute := func(on bool) {
		t.Helper()
		if err := b.signal(b.ctx, &parleyv1.SignalRequest{CallId: call.GetId(), Signal: &parleyv1.SignalRequest_Mute{Mute: &parleyv1.MuteTrack{Source: mic, Muted: on}}}); err != nil {
			t.Fatalf("Signal(mute %v): %v", on, err)
		}
		a.until(2*time.Second, "mute change", func(m *parleyv1.SignalsResponse) bool {
			mc := m.GetMuteChanged()
			return mc.GetUserId() == bob.user.GetId() && mc.GetSource() == mic && mc.GetMuted() == on
		})
		// Every node answers GetCall with the room's tracks.
		for _, n := range []*env{n1, n2} {
			res, err := n.calls().GetCall(alice.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			var tracks []*parleyv1.Track
			for _, p := range res.GetCall().GetParticipants() {
				if p.GetUserId() == bob.user.GetId() {
					tracks = p.GetTracks()
				}
			}
			if len(tracks) != 1 || tracks[0].GetSource() != mic || tracks[0].GetMuted() != on {
				t.Errorf("GetCall on %s lists bob's tracks %v; want his microphone, muted %v", n.srv.URL, tracks, on)
			}
		}
	}
	mute(true)
	// A Signals stream opened now starts with the muted track in its state.
	a2 := newPeer(t, n2.calls(), alice, call.GetId())
	for _, p := range a2.first.GetParticipants() {
		if p.GetUserId() == bob.user.GetId() && (len(p.GetTracks()) != 1 || !p.GetTracks()[0].GetMuted()) {
			t.Errorf("the state a new Signals stream starts with lists bob's tracks %v; want his microphone muted", p.GetTracks())
		}
	}
	a = a2 // it replaced alice's first stream
	mute(false)
}

func TestCallInAGroupOfThreeThenMembersLeaveTheGroup(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil, loopbackRTC)
	calls := ge.calls()
	owner, ann, ben, cat := ge.signUp("owner"), ge.signUp("ann"), ge.signUp("ben"), ge.signUp("cat")
	g := ge.create(t, owner, "team", ann, ben, cat)
	call := startCall(t, calls, ann, g.GetId(), parleyv1.CallKind_CALL_KIND_VIDEO)
	for _, who := range []account{ben, cat} {
		_, err := calls.AnswerCall(who.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
		ge.must(t, "AnswerCall", err)
	}
	a := newPeerSending(t, calls, ann, call.GetId(), mic, camera)
	b := newPeerSending(t, calls, ben, call.GetId(), mic, camera)
	c := newPeerSending(t, calls, cat, call.GetId(), mic, camera)
	av := []parleyv1.TrackSource{mic, camera}
	waitSources(t, 5*time.Second, 10, map[*peer]map[string][]parleyv1.TrackSource{
		a: {ben.user.GetId(): av, cat.user.GetId(): av},
		b: {ann.user.GetId(): av, cat.user.GetId(): av},
		c: {ann.user.GetId(): av, ben.user.GetId(): av},
	})

	// The owner removes ben: he is out of the call, his stream ends, and the
	// others lose his tracks within 2 s.
	removed := time.Now()
	_, err := ge.g.RemoveMembers(owner.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g.GetId(), UserIds: []string{ben.user.GetId()}})
	ge.must(t, "RemoveMembers", err)
	select {
	case <-b.ended:
	case <-time.After(2 * time.Second):
		t.Fatal("ben's Signals stream is still open after he was removed from the group")
	}
	for _, p := range []*peer{a, c} {
		p.until(2*time.Second, "ben left", func(m *parleyv1.SignalsResponse) bool {
			return m.GetParticipantLeft().GetUserId() == ben.user.GetId()
		})
		p.until(2*time.Second, "ben's camera gone", unpublished(ben.user.GetId(), camera))
		p.until(2*time.Second, "ben's microphone gone", unpublished(ben.user.GetId(), mic))
	}
	t.Logf("removed from the group → out of the call for the others in %v", time.Since(removed))
	res, err := calls.GetCall(ann.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	ge.must(t, "GetCall", err)
	if got := res.GetCall(); got.GetState() != parleyv1.CallState_CALL_STATE_ACTIVE ||
		participantState(got, ben.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_LEFT {
		t.Fatalf("after ben was removed: %v; want him left and the call going on", got)
	}
	waitSources(t, 5*time.Second, c.receivedSource(ann.user.GetId(), camera)+10, map[*peer]map[string][]parleyv1.TrackSource{c: {ann.user.GetId(): av}})

	// Dissolving the group takes everyone out: the call ends.
	_, err = ge.g.DissolveGroup(owner.ctx(), &parleyv1.DissolveGroupRequest{GroupId: g.GetId()})
	ge.must(t, "DissolveGroup", err)
	for _, p := range []*peer{a, c} {
		select {
		case <-p.ended:
		case <-time.After(2 * time.Second):
			t.Fatalf("%s's Signals stream is still open after the group was dissolved", p.who.user.GetUsername())
		}
	}
	wantCallEnded(t, ge.env, ann, g.GetId(), call.GetId(), parleyv1.CallOutcome_CALL_OUTCOME_COMPLETED)
}

func TestCallInAGroupStopsRingingWhoDidNotAnswerInTime(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil, func(c *server.Config) { c.CallRingTimeout = 400 * time.Millisecond })
	calls := ge.calls()
	owner, ann, ben := ge.signUp("owner"), ge.signUp("ann"), ge.signUp("ben")
	g := ge.create(t, owner, "team", ann, ben)
	bens, _ := rpcSubscribe(t, ge.m, ben)
	call := startCall(t, calls, owner, g.GetId(), parleyv1.CallKind_CALL_KIND_AUDIO)
	started := time.Now()
	untilEvent(t, bens, callEvent(call.GetId(), ringing))
	_, err := calls.AnswerCall(ann.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
	ge.must(t, "AnswerCall", err)
	res, err := calls.GetCall(ben.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	ge.must(t, "GetCall", err)
	if s := participantState(res.GetCall(), ben.user.GetId()); s != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_INVITED {
		t.Fatalf("ben, still rung, sees himself %v; want INVITED", s)
	}
	// Ben does not answer: after the timeout his devices hear that he missed
	// it, and the call goes on.
	missed := func(ev *parleyv1.SubscribeResponse) bool {
		got := ev.GetCall().GetUpdated()
		return got.GetId() == call.GetId() && participantState(got, ben.user.GetId()) == parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_MISSED
	}
	evs := untilEvent(t, bens, missed)
	if d := time.Since(started); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("ben's ringing stopped after %v; want the 400ms timeout", d)
	}
	if got := evs[len(evs)-1].GetCall().GetUpdated(); got.GetState() != parleyv1.CallState_CALL_STATE_ACTIVE ||
		participantState(got, ann.user.GetId()) != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED {
		t.Errorf("when ben's ringing stopped the call was %v; want it going on with ann", got)
	}
	res, err = calls.GetCall(ann.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
	ge.must(t, "GetCall", err)
	if s := participantState(res.GetCall(), ben.user.GetId()); s != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_UNSPECIFIED {
		t.Errorf("the others see ben %v; want him not listed", s)
	}
	// He may still join the call in progress.
	ans, err := calls.AnswerCall(ben.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
	ge.must(t, "AnswerCall after missing", err)
	if s := participantState(ans.GetCall(), ben.user.GetId()); s != parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_JOINED {
		t.Errorf("ben answering late is %v; want JOINED", s)
	}
}

// A node that starts after another stopped takes over the invitations of the
// group calls in progress: a member the stopped node was ringing stops ringing
// at the timeout all the same.
func TestCallInAGroupStopsRingingAfterItsNodeRestarts(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil, func(c *server.Config) { c.CallRingTimeout = time.Hour })
	owner, ann, ben := ge.signUp("owner"), ge.signUp("ann"), ge.signUp("ben")
	g := ge.create(t, owner, "team", ann, ben)
	call := startCall(t, ge.calls(), owner, g.GetId(), parleyv1.CallKind_CALL_KIND_AUDIO)
	_, err := ge.calls().AnswerCall(ann.ctx(), &parleyv1.AnswerCallRequest{CallId: call.GetId()})
	ge.must(t, "AnswerCall", err)

	second := newEnvOn(t, ge.db, func(c *server.Config) { c.CallRingTimeout = 200 * time.Millisecond })
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := second.calls().GetCall(ben.ctx(), &parleyv1.GetCallRequest{CallId: call.GetId()})
		ge.must(t, "GetCall", err)
		if s := participantState(res.GetCall(), ben.user.GetId()); s == parleyv1.CallParticipantState_CALL_PARTICIPANT_STATE_MISSED {
			if res.GetCall().GetState() != parleyv1.CallState_CALL_STATE_ACTIVE {
				t.Fatalf("after ben's ringing stopped the call is %v; want it going on", res.GetCall())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ben is still rung: %v", res.GetCall())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
