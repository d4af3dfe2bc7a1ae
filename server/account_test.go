package server_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// login opens another session (device) of a.
func (e *env) login(a account, opts ...connect.ClientOption) account {
	e.t.Helper()
	res, err := e.auth(opts...).Login(context.Background(), &parleyv1.LoginRequest{
		Username: a.user.GetUsername(), Password: a.password, DeviceName: "second", Platform: parleyv1.Platform_PLATFORM_CLI,
	})
	if err != nil {
		e.t.Fatalf("Login(%s): %v", a.user.GetUsername(), err)
	}
	a.tokens = res.GetTokens()
	return a
}

func TestEveryUserHasAPrivateAccountConversation(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, unthrottled)
		c := e.msgs(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)

		list, err := c.ListConversations(alice.ctx(), &parleyv1.ListConversationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var accounts []*parleyv1.Conversation
		for _, conv := range list.GetConversations() {
			if conv.GetKind() == parleyv1.ConversationKind_CONVERSATION_KIND_ACCOUNT {
				accounts = append(accounts, conv)
			}
		}
		if len(accounts) != 1 || accounts[0].GetId() != alice.accountConv || accounts[0].GetMemberCount() != 1 {
			t.Fatalf("got account conversations %v, want one: %s with alice alone", accounts, alice.accountConv)
		}

		_, err = c.Send(alice.ctx(), text("", "note to self", alice.accountConv))
		wantCode(t, err, connect.CodePermissionDenied)
		// Someone else's account conversation does not exist for bob.
		_, err = c.Send(bob.ctx(), text("", "hi", alice.accountConv))
		wantCode(t, err, connect.CodeNotFound)
		_, err = c.ListMessages(bob.ctx(), &parleyv1.ListMessagesRequest{ConversationId: alice.accountConv})
		wantCode(t, err, connect.CodeNotFound)
		_, err = c.GetConversation(bob.ctx(), &parleyv1.GetConversationRequest{ConversationId: alice.accountConv})
		wantCode(t, err, connect.CodeNotFound)
		if got := e.count("messages"); got != 0 {
			t.Errorf("refused sends stored %d messages", got)
		}
	})
}

// What a user does on one device reaches their other devices through the
// account conversation's log: live on an open stream, and later through Sync.
func TestAccountLogCarriesSettingsAndDeletionsToOtherDevices(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t, unthrottled)
		c := e.msgs(opts...)
		_, bob, conv := e.pair("alice", "bob")
		phone := e.login(bob, opts...)

		// The laptop catches up, then listens from where it is.
		start, err := c.Sync(bob.ctx(), &parleyv1.SyncRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(bob.ctx(), 20*time.Second)
		defer cancel()
		stream, err := c.Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: start.GetPositions()})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for ev := rpcReceive(t, stream); ev.GetHeartbeat() == nil; ev = rpcReceive(t, stream) {
		}

		// The phone changes privacy, pins the chat and deletes a message.
		if _, err := e.auth(opts...).UpdatePrivacy(phone.ctx(), &parleyv1.UpdatePrivacyRequest{
			MessagePrivacy: parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY,
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.UpdateConversationSettings(phone.ctx(), &parleyv1.UpdateConversationSettingsRequest{ConversationId: conv, Pinned: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteForMe(phone.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, Seqs: []int64{1}}); err != nil {
			t.Fatal(err)
		}
		want := []*parleyv1.SystemContent{
			{Event: &parleyv1.SystemContent_SettingsChanged{SettingsChanged: &parleyv1.SettingsChanged{
				Setting: &parleyv1.SettingsChanged_Privacy{Privacy: &parleyv1.PrivacySettings{MessagePrivacy: parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY}},
			}}},
			{Event: &parleyv1.SystemContent_SettingsChanged{SettingsChanged: &parleyv1.SettingsChanged{
				Setting: &parleyv1.SettingsChanged_Conversation{Conversation: &parleyv1.ConversationSettings{ConversationId: conv, Pinned: true}},
			}}},
			{Event: &parleyv1.SystemContent_MessagesDeleted{MessagesDeleted: &parleyv1.MessagesDeleted{ConversationId: conv, Seqs: []int64{1}}}},
		}

		var live []*parleyv1.SystemContent
		for len(live) < len(want) {
			ev := rpcReceive(t, stream)
			if m := ev.GetMessage(); m != nil {
				if m.GetConversationId() != bob.accountConv || m.GetSenderId() != bob.user.GetId() {
					t.Fatalf("got message %v, want entries of bob's account conversation", m)
				}
				live = append(live, m.GetSystem())
			}
		}
		if diff := cmp.Diff(want, live, protocmp.Transform()); diff != "" {
			t.Errorf("entries on the open stream (-want +got):\n%s", diff)
		}

		// A device that was offline gets the same entries from its cursors.
		later, err := c.Sync(e.login(bob, opts...).ctx(), &parleyv1.SyncRequest{Cursors: start.GetPositions()})
		if err != nil {
			t.Fatal(err)
		}
		var synced []*parleyv1.SystemContent
		for _, m := range later.GetMessages() {
			if m.GetConversationId() == bob.accountConv {
				synced = append(synced, m.GetSystem())
			}
		}
		if diff := cmp.Diff(live, synced, protocmp.Transform()); diff != "" {
			t.Errorf("entries through Sync (-live +synced):\n%s", diff)
		}
	})
}

// Every request that writes the account log takes its lock before any member
// row, so one user's concurrent settings changes never deadlock.
func TestConcurrentAccountChangesOfOneUserAllSucceed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, _, conv := e.pair("acct_race_a", "acct_race_b")
	var wg sync.WaitGroup
	errs := make(chan error, 120)
	for i := range 40 {
		wg.Go(func() {
			_, err := e.auth().UpdatePrivacy(alice.ctx(), &parleyv1.UpdatePrivacyRequest{MessagePrivacy: parleyv1.MessagePrivacy(1 + i%3)})
			errs <- err
		})
		wg.Go(func() {
			_, err := e.msgs().UpdateConversationSettings(alice.ctx(), &parleyv1.UpdateConversationSettingsRequest{ConversationId: alice.accountConv, Muted: proto.Bool(i%2 == 0)})
			errs <- err
		})
		wg.Go(func() {
			_, err := e.msgs().DeleteForMe(alice.ctx(), &parleyv1.DeleteForMeRequest{ConversationId: conv, Seqs: []int64{1}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent account change failed: %v", err)
		}
	}
}
