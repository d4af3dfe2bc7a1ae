package server_test

import (
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// firstTyping reads stream until a typing event and returns it.
func firstTyping(t testing.TB, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse]) *parleyv1.TypingEvent {
	t.Helper()
	evs := untilEvent(t, stream, func(ev *parleyv1.SubscribeResponse) bool { return ev.GetTyping() != nil })
	return evs[len(evs)-1].GetTyping()
}

// TestTypingFollowsTheRulesOfSending: a user whom the other blocked, and a
// member muted in a group, could call SendTyping and the others' streams
// got the event; CreateDirectConversation handed a blocked user the
// conversation they already had. Typing is something the others receive,
// so the rules of sending decide it.
func TestTypingFollowsTheRulesOfSending(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	alice, bob, carol := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol")
	direct := rpcSend(t, ge.m, alice, rpcToUser(bob.user.GetId(), "hi")).GetConversationId()
	g := ge.create(t, alice, "G", bob, carol).GetId()
	stream, _ := rpcSubscribe(t, ge.m, alice)
	typing := func(who account, conv string) error {
		_, err := ge.m.SendTyping(who.ctx(), &parleyv1.SendTypingRequest{ConversationId: conv, Typing: true})
		return err
	}

	_, err := ge.contacts().BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: bob.user.GetId()})
	ge.must(t, "BlockUser", err)
	wantCode(t, typing(bob, direct), connect.CodePermissionDenied)
	wantCode(t, typing(alice, direct), connect.CodePermissionDenied) // the blocker: "you blocked this user"
	_, err = ge.m.CreateDirectConversation(bob.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: alice.user.GetId()})
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = ge.contacts().UnblockUser(alice.ctx(), &parleyv1.UnblockUserRequest{UserId: bob.user.GetId()})
	ge.must(t, "UnblockUser", err)
	ge.must(t, "typing once unblocked", typing(bob, direct))
	if ev := firstTyping(t, stream); ev.GetUserId() != bob.user.GetId() || ev.GetConversationId() != direct {
		t.Fatalf("alice's first typing event %v, want bob's in the direct conversation once unblocked", ev)
	}
	_, err = ge.m.CreateDirectConversation(bob.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: alice.user.GetId()})
	ge.must(t, "CreateDirectConversation once unblocked", err)

	_, err = ge.g.MuteMember(alice.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: bob.user.GetId(), MutedUntil: timestamppb.New(timestamppb.Now().AsTime().Add(3600e9))})
	ge.must(t, "MuteMember", err)
	wantCode(t, typing(bob, g), connect.CodePermissionDenied)
	ge.must(t, "carol types", typing(carol, g))
	if ev := firstTyping(t, stream); ev.GetUserId() != carol.user.GetId() || ev.GetConversationId() != g {
		t.Fatalf("alice's next typing event %v, want carol's in the group (bob is muted)", ev)
	}
}
