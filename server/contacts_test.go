package server_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func (e *env) contacts(opts ...connect.ClientOption) parleyv1connect.ContactsServiceClient {
	return parleyv1connect.NewContactsServiceClient(e.client, e.srv.URL, opts...)
}

const (
	pending   = parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_PENDING
	accepted  = parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_ACCEPTED
	declined  = parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_DECLINED
	cancelled = parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_CANCELLED

	incoming = parleyv1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING
	outgoing = parleyv1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_OUTGOING

	accept  = parleyv1.FriendRequestDecision_FRIEND_REQUEST_DECISION_ACCEPT
	decline = parleyv1.FriendRequestDecision_FRIEND_REQUEST_DECISION_DECLINE
)

// ask sends a friend request from a to b and fails t on error.
func ask(t testing.TB, c parleyv1connect.ContactsServiceClient, from, to account, greeting string) *parleyv1.SendFriendRequestResponse {
	t.Helper()
	res, err := c.SendFriendRequest(from.ctx(), &parleyv1.SendFriendRequestRequest{UserId: to.user.GetId(), Greeting: greeting})
	if err != nil {
		t.Fatalf("SendFriendRequest(%s → %s): %v", from.user.GetUsername(), to.user.GetUsername(), err)
	}
	return res
}

// respond answers request id as a and fails t on error.
func respond(t testing.TB, c parleyv1connect.ContactsServiceClient, a account, id string, d parleyv1.FriendRequestDecision) *parleyv1.RespondFriendRequestResponse {
	t.Helper()
	res, err := c.RespondFriendRequest(a.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: id, Decision: d})
	if err != nil {
		t.Fatalf("RespondFriendRequest(%s, %v): %v", a.user.GetUsername(), d, err)
	}
	return res
}

// befriend makes a and b contacts: a asks, b accepts.
func befriend(t testing.TB, c parleyv1connect.ContactsServiceClient, a, b account) {
	t.Helper()
	respond(t, c, b, ask(t, c, a, b, "").GetFriendRequest().GetId(), accept)
}

// requests lists a's requests in one direction and state (0: any).
func requests(t testing.TB, c parleyv1connect.ContactsServiceClient, a account, dir parleyv1.FriendRequestDirection, state parleyv1.FriendRequestState) []*parleyv1.FriendRequest {
	t.Helper()
	res, err := c.ListFriendRequests(a.ctx(), &parleyv1.ListFriendRequestsRequest{Direction: dir, State: state, PageSize: 100})
	if err != nil {
		t.Fatalf("ListFriendRequests(%s): %v", a.user.GetUsername(), err)
	}
	return res.GetFriendRequests()
}

// contactIDs lists the user ids of a's contacts, most recent first.
func contactIDs(t testing.TB, c parleyv1connect.ContactsServiceClient, a account) []string {
	t.Helper()
	res, err := c.ListContacts(a.ctx(), &parleyv1.ListContactsRequest{PageSize: 500})
	if err != nil {
		t.Fatalf("ListContacts(%s): %v", a.user.GetUsername(), err)
	}
	ids := []string{}
	for _, ct := range res.GetContacts() {
		ids = append(ids, ct.GetUser().GetId())
	}
	return ids
}

// requestStates are the ids and states of requests, for comparisons.
func requestStates(rs []*parleyv1.FriendRequest) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.GetId()+" "+r.GetState().String())
	}
	return out
}

// accountLog returns the system contents of a's account conversation, in
// seq order, with their senders.
func accountLog(t testing.TB, e *env, a account) ([]*parleyv1.SystemContent, []string) {
	t.Helper()
	res, err := e.msgs().ListMessages(a.ctx(), &parleyv1.ListMessagesRequest{ConversationId: a.accountConv, Limit: 200})
	if err != nil {
		t.Fatalf("ListMessages(account of %s): %v", a.user.GetUsername(), err)
	}
	var contents []*parleyv1.SystemContent
	var senders []string
	for _, m := range res.GetMessages() {
		contents = append(contents, m.GetSystem())
		senders = append(senders, m.GetSenderId())
	}
	return contents, senders
}

func requestEntry(r *parleyv1.FriendRequest, state parleyv1.FriendRequestState) *parleyv1.SystemContent {
	return &parleyv1.SystemContent{Event: &parleyv1.SystemContent_FriendRequest{FriendRequest: &parleyv1.FriendRequestChanged{
		RequestId: r.GetId(), FromUserId: r.GetFromUser().GetId(), ToUserId: r.GetToUser().GetId(), State: state, Greeting: r.GetGreeting(),
	}}}
}

func TestFriendRequestAcceptedMakesContactsOnBothSides(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c := e.contacts(opts...)
		alice, bob := e.signUp("alice", opts...), e.signUp("bob", opts...)

		sent := ask(t, c, alice, bob, "hi, it's Alice from the climbing club")
		r := sent.GetFriendRequest()
		if r.GetState() != pending || r.GetFromUser().GetId() != alice.user.GetId() || r.GetToUser().GetId() != bob.user.GetId() ||
			r.GetGreeting() != "hi, it's Alice from the climbing club" || r.GetCreateTime() == nil || sent.GetContact() != nil {
			t.Fatalf("got %v, want a pending request from alice to bob with the greeting and no contact", sent)
		}
		if diff := cmp.Diff([]*parleyv1.FriendRequest{r}, requests(t, c, bob, incoming, 0), protocmp.Transform()); diff != "" {
			t.Errorf("bob's incoming requests (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]*parleyv1.FriendRequest{r}, requests(t, c, alice, outgoing, pending), protocmp.Transform()); diff != "" {
			t.Errorf("alice's outgoing requests (-want +got):\n%s", diff)
		}
		if got := requests(t, c, alice, incoming, 0); len(got) != 0 {
			t.Errorf("alice's incoming requests: got %v, want none", got)
		}
		// What another user did is news in the account conversation; what
		// the owner did is read.
		unread := func(a account) int64 {
			t.Helper()
			res, err := e.msgs(opts...).GetConversation(a.ctx(), &parleyv1.GetConversationRequest{ConversationId: a.accountConv})
			if err != nil {
				t.Fatal(err)
			}
			return res.GetConversation().GetUnreadCount()
		}
		if a, b := unread(alice), unread(bob); a != 0 || b != 1 {
			t.Errorf("unread in the account conversations: alice %d, bob %d, want 0 and 1", a, b)
		}

		res, err := c.RespondFriendRequest(bob.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: r.GetId(), Decision: accept, Remark: "Ally"})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetFriendRequest().GetState() != accepted || res.GetContact().GetUser().GetId() != alice.user.GetId() ||
			res.GetContact().GetRemark() != "Ally" || res.GetContact().GetSinceTime() == nil {
			t.Fatalf("got %v, want the request accepted and alice as bob's contact remarked Ally", res)
		}
		bobs, err := c.ListContacts(bob.ctx(), &parleyv1.ListContactsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]*parleyv1.Contact{res.GetContact()}, bobs.GetContacts(), protocmp.Transform()); diff != "" {
			t.Errorf("bob's contacts (-want +got):\n%s", diff)
		}
		alices, err := c.ListContacts(alice.ctx(), &parleyv1.ListContactsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(alices.GetContacts()) != 1 || alices.GetContacts()[0].GetUser().GetId() != bob.user.GetId() || alices.GetContacts()[0].GetRemark() != "" {
			t.Errorf("alice's contacts: got %v, want bob without a remark (bob's remark is his own)", alices.GetContacts())
		}
		if got := requests(t, c, bob, incoming, pending); len(got) != 0 {
			t.Errorf("bob's pending requests: got %v, want none", got)
		}
		if a, b := unread(alice), unread(bob); a != 1 || b != 0 {
			t.Errorf("unread in the account conversations after the accept: alice %d, bob %d, want 1 and 0", a, b)
		}
		if got := requests(t, c, alice, outgoing, accepted); len(got) != 1 || got[0].GetId() != r.GetId() || !got[0].GetUpdateTime().AsTime().After(got[0].GetCreateTime().AsTime()) {
			t.Errorf("alice's accepted requests: got %v, want hers, updated after its creation", got)
		}

		// Both account logs tell the story; the acting user is the sender.
		aliceLog, aliceSenders := accountLog(t, e, alice)
		bobLog, bobSenders := accountLog(t, e, bob)
		want := []*parleyv1.SystemContent{requestEntry(r, pending), requestEntry(r, accepted)}
		wantSenders := []string{alice.user.GetId(), bob.user.GetId()}
		for name, got := range map[string][]*parleyv1.SystemContent{"alice": aliceLog, "bob": bobLog} {
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("%s's account log (-want +got):\n%s", name, diff)
			}
		}
		if diff := cmp.Diff(wantSenders, aliceSenders); diff != "" {
			t.Errorf("senders in alice's log (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantSenders, bobSenders); diff != "" {
			t.Errorf("senders in bob's log (-want +got):\n%s", diff)
		}
	})
}

func TestFriendRequestRules(t *testing.T) {
	t.Parallel()
	t.Run("a request to yourself is invalid", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		alice := e.signUp("alice")
		_, err := e.contacts().SendFriendRequest(alice.ctx(), &parleyv1.SendFriendRequestRequest{UserId: alice.user.GetId()})
		wantCode(t, err, connect.CodeInvalidArgument)
		if got := errorMessage(err); !strings.Contains(got, "yourself") {
			t.Errorf("got message %q, want it to say why", got)
		}
	})
	t.Run("bad input is refused with the field named", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.contacts()
		alice, bob := e.signUp("alice"), e.signUp("bob")
		for name, req := range map[string]*parleyv1.SendFriendRequestRequest{
			"greeting": {UserId: bob.user.GetId(), Greeting: strings.Repeat("x", 201)},
			"user_id":  {UserId: "bob"},
		} {
			_, err := c.SendFriendRequest(alice.ctx(), req)
			wantCode(t, err, connect.CodeInvalidArgument)
			if got := violatedFields(t, err); len(got) != 1 || got[0] != name {
				t.Errorf("got violated fields %v, want [%s]", got, name)
			}
		}
		_, err := c.ListFriendRequests(alice.ctx(), &parleyv1.ListFriendRequestsRequest{})
		wantCode(t, err, connect.CodeInvalidArgument) // direction is required
		_, err = c.RespondFriendRequest(alice.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: newUUID()})
		wantCode(t, err, connect.CodeInvalidArgument) // decision is required
		if got := e.count("friend_requests"); got != 0 {
			t.Errorf("refused requests stored %d rows", got)
		}
		// A greeting of exactly 200 characters (not bytes) is fine.
		ask(t, c, alice, bob, strings.Repeat("é", 200))
	})
	t.Run("a request to an unknown user is not found", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		alice := e.signUp("alice")
		_, err := e.contacts().SendFriendRequest(alice.ctx(), &parleyv1.SendFriendRequestRequest{UserId: newUUID()})
		wantCode(t, err, connect.CodeNotFound)
	})
	t.Run("a repeated request returns the pending one", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.contacts()
		alice, bob := e.signUp("alice"), e.signUp("bob")
		first := ask(t, c, alice, bob, "hello").GetFriendRequest()
		again := ask(t, c, alice, bob, "hello?").GetFriendRequest()
		if diff := cmp.Diff(first, again, protocmp.Transform()); diff != "" {
			t.Errorf("repeated request (-first +again):\n%s", diff)
		}
		if got := e.count("friend_requests"); got != 1 {
			t.Errorf("got %d requests stored, want 1", got)
		}
		if log, _ := accountLog(t, e, bob); len(log) != 1 {
			t.Errorf("bob's log got %d entries, want the one request", len(log))
		}
	})
	t.Run("a request to someone who asked you accepts theirs", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.contacts()
		alice, bob := e.signUp("alice"), e.signUp("bob")
		theirs := ask(t, c, bob, alice, "").GetFriendRequest()
		res := ask(t, c, alice, bob, "")
		if res.GetFriendRequest().GetId() != theirs.GetId() || res.GetFriendRequest().GetState() != accepted || res.GetContact().GetUser().GetId() != bob.user.GetId() {
			t.Fatalf("got %v, want bob's request %s accepted and bob as the new contact", res, theirs.GetId())
		}
		if got := contactIDs(t, c, bob); len(got) != 1 || got[0] != alice.user.GetId() {
			t.Errorf("bob's contacts: got %v, want alice", got)
		}
		_, err := c.SendFriendRequest(alice.ctx(), &parleyv1.SendFriendRequestRequest{UserId: bob.user.GetId()})
		wantCode(t, err, connect.CodeAlreadyExists)
		_, err = c.SendFriendRequest(bob.ctx(), &parleyv1.SendFriendRequestRequest{UserId: alice.user.GetId()})
		wantCode(t, err, connect.CodeAlreadyExists)
		if got := e.count("friend_requests"); got != 1 {
			t.Errorf("got %d requests stored, want 1", got)
		}
	})
	t.Run("a declined request can be sent again", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.contacts()
		alice, bob := e.signUp("alice"), e.signUp("bob")
		r := ask(t, c, alice, bob, "").GetFriendRequest()
		res := respond(t, c, bob, r.GetId(), decline)
		if res.GetFriendRequest().GetState() != declined || res.GetContact() != nil {
			t.Fatalf("got %v, want the request declined and no contact", res)
		}
		if got := requests(t, c, alice, outgoing, 0); len(got) != 1 || got[0].GetState() != declined {
			t.Errorf("alice's outgoing: got %v, want her request declined", got)
		}
		_, err := c.RespondFriendRequest(bob.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: r.GetId(), Decision: accept})
		wantCode(t, err, connect.CodeFailedPrecondition)
		if got := contactIDs(t, c, bob); len(got) != 0 {
			t.Errorf("bob's contacts: got %v, want none", got)
		}
		again := ask(t, c, alice, bob, "").GetFriendRequest()
		if again.GetId() == r.GetId() || again.GetState() != pending {
			t.Errorf("got %v, want a new pending request", again)
		}
	})
	t.Run("a cancelled request can no longer be answered", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		c := e.contacts()
		alice, bob := e.signUp("alice"), e.signUp("bob")
		r := ask(t, c, alice, bob, "").GetFriendRequest()
		res, err := c.CancelFriendRequest(alice.ctx(), &parleyv1.CancelFriendRequestRequest{RequestId: r.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetFriendRequest().GetState() != cancelled {
			t.Fatalf("got %v, want the request cancelled", res)
		}
		if got := requests(t, c, bob, incoming, 0); len(got) != 1 || got[0].GetState() != cancelled {
			t.Errorf("bob's incoming: got %v, want the request cancelled", got)
		}
		_, err = c.RespondFriendRequest(bob.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: r.GetId(), Decision: accept})
		wantCode(t, err, connect.CodeFailedPrecondition)
		_, err = c.CancelFriendRequest(alice.ctx(), &parleyv1.CancelFriendRequestRequest{RequestId: r.GetId()})
		wantCode(t, err, connect.CodeFailedPrecondition)
		bobLog, _ := accountLog(t, e, bob)
		want := []*parleyv1.SystemContent{requestEntry(r, pending), requestEntry(r, cancelled)}
		if diff := cmp.Diff(want, bobLog, protocmp.Transform()); diff != "" {
			t.Errorf("bob's account log (-want +got):\n%s", diff)
		}
	})
	t.Run("too many requests are throttled", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, func(c *server.Config) { c.FriendRequests = server.Rate{Burst: 2, Per: time.Hour} })
		c := e.contacts()
		alice := e.signUp("alice")
		for _, name := range []string{"bob", "carol"} {
			ask(t, c, alice, e.signUp(name), "")
		}
		_, err := c.SendFriendRequest(alice.ctx(), &parleyv1.SendFriendRequestRequest{UserId: e.signUp("dave").user.GetId()})
		wantCode(t, err, connect.CodeResourceExhausted)
		if retryDelay(t, err) <= 0 {
			t.Errorf("got no retry delay in %v", err)
		}
	})
}

// A request, contact or block belongs to the users it names: anyone else
// gets NotFound and learns nothing of it.
func TestOthersFriendRequestsAndContactsAreNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.contacts()
	alice, bob, carol := e.signUp("alice"), e.signUp("bob"), e.signUp("carol")
	r := ask(t, c, alice, bob, "a secret greeting").GetFriendRequest()
	befriend(t, c, carol, bob)

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"a stranger answers it", func() error {
			_, err := c.RespondFriendRequest(carol.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: r.GetId(), Decision: accept})
			return err
		}},
		{"its sender answers it", func() error {
			_, err := c.RespondFriendRequest(alice.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: r.GetId(), Decision: accept})
			return err
		}},
		{"its recipient cancels it", func() error {
			_, err := c.CancelFriendRequest(bob.ctx(), &parleyv1.CancelFriendRequestRequest{RequestId: r.GetId()})
			return err
		}},
		{"a stranger cancels it", func() error {
			_, err := c.CancelFriendRequest(carol.ctx(), &parleyv1.CancelFriendRequestRequest{RequestId: r.GetId()})
			return err
		}},
		{"an unknown request is answered", func() error {
			_, err := c.RespondFriendRequest(bob.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: newUUID(), Decision: decline})
			return err
		}},
		{"an unknown request is cancelled", func() error {
			_, err := c.CancelFriendRequest(alice.ctx(), &parleyv1.CancelFriendRequestRequest{RequestId: newUUID()})
			return err
		}},
		{"a stranger gets a remark", func() error {
			_, err := c.SetContactRemark(alice.ctx(), &parleyv1.SetContactRemarkRequest{UserId: bob.user.GetId(), Remark: "x"})
			return err
		}},
		{"someone else's contact is removed", func() error {
			_, err := c.RemoveContact(alice.ctx(), &parleyv1.RemoveContactRequest{UserId: bob.user.GetId()})
			return err
		}},
		{"an unknown user is removed", func() error {
			_, err := c.RemoveContact(alice.ctx(), &parleyv1.RemoveContactRequest{UserId: newUUID()})
			return err
		}},
		{"the caller is removed from their own contacts", func() error {
			_, err := c.RemoveContact(alice.ctx(), &parleyv1.RemoveContactRequest{UserId: alice.user.GetId()})
			return err
		}},
		{"an unknown user is blocked", func() error {
			_, err := c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: newUUID()})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			wantCode(t, err, connect.CodeNotFound)
			if msg := errorMessage(err); strings.Contains(msg, "secret") || strings.Contains(msg, "alice") || strings.Contains(msg, "bob") {
				t.Errorf("error %q tells of the request", msg)
			}
			if d := details(t, err); len(d) != 0 {
				t.Errorf("error carries details %v", d)
			}
		})
	}
	// Nothing changed, and a stranger's lists show none of it.
	if got := requests(t, c, bob, incoming, pending); len(got) != 1 || got[0].GetId() != r.GetId() {
		t.Errorf("bob's pending requests: got %v, want alice's", got)
	}
	if got := contactIDs(t, c, bob); len(got) != 1 || got[0] != carol.user.GetId() {
		t.Errorf("bob's contacts: got %v, want carol", got)
	}
	for _, dir := range []parleyv1.FriendRequestDirection{incoming, outgoing} {
		for _, got := range requests(t, c, carol, dir, 0) {
			if got.GetId() == r.GetId() {
				t.Errorf("carol lists alice's request to bob")
			}
		}
	}
}

// Two users asking each other at the same moment, or one accepting while the
// other asks again, end as exactly one friendship and no pending request.
func TestCrossingFriendRequestsMakeOneFriendship(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.contacts()
	const pairs, rounds = 8, 4
	type pair struct{ a, b account }
	var ps []pair
	for i := range pairs {
		ps = append(ps, pair{e.signUp(fmt.Sprintf("asker%d", i)), e.signUp(fmt.Sprintf("other%d", i))})
	}
	type result struct {
		state parleyv1.FriendRequestState
		code  connect.Code // 0: no error
	}
	for round := range rounds {
		// In half the pairs both ask at once; in the other half b answers
		// a request of a's while also asking a.
		early := make([]string, pairs)
		for i := pairs / 2; i < pairs; i++ {
			early[i] = ask(t, c, ps[i].a, ps[i].b, "").GetFriendRequest().GetId()
		}
		results := make([][2]result, pairs)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, p := range ps {
			calls := [2]func() (parleyv1.FriendRequestState, error){
				func() (parleyv1.FriendRequestState, error) {
					res, err := c.SendFriendRequest(p.a.ctx(), &parleyv1.SendFriendRequestRequest{UserId: p.b.user.GetId()})
					return res.GetFriendRequest().GetState(), err
				},
				func() (parleyv1.FriendRequestState, error) {
					res, err := c.SendFriendRequest(p.b.ctx(), &parleyv1.SendFriendRequestRequest{UserId: p.a.user.GetId()})
					return res.GetFriendRequest().GetState(), err
				},
			}
			if early[i] != "" {
				calls[0] = func() (parleyv1.FriendRequestState, error) {
					res, err := c.RespondFriendRequest(p.b.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: early[i], Decision: accept})
					return res.GetFriendRequest().GetState(), err
				}
			}
			for j, call := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					state, err := call()
					results[i][j] = result{state: state}
					if err != nil {
						results[i][j].code = connect.CodeOf(err)
					}
				}()
			}
		}
		close(start)
		wg.Wait()

		for i, p := range ps {
			got := results[i]
			accepts := 0
			for _, r := range got {
				switch {
				case r.code == 0 && r.state == accepted:
					accepts++
				case r.code == 0 && r.state == pending:
				case r.code == connect.CodeAlreadyExists, r.code == connect.CodeFailedPrecondition:
					// The other call made them contacts first.
				default:
					t.Errorf("round %d, pair %d: got result %v", round, i, r)
				}
			}
			if accepts != 1 {
				t.Errorf("round %d, pair %d: got results %v, want exactly one accept", round, i, got)
			}
			if a, b := contactIDs(t, c, p.a), contactIDs(t, c, p.b); len(a) != 1 || a[0] != p.b.user.GetId() || len(b) != 1 || b[0] != p.a.user.GetId() {
				t.Fatalf("round %d, pair %d: got contacts %v and %v, want each other once", round, i, a, b)
			}
			if got := requests(t, c, p.a, outgoing, pending); len(got) != 0 {
				t.Errorf("round %d, pair %d: a still has pending %v", round, i, got)
			}
			if got := requests(t, c, p.b, outgoing, pending); len(got) != 0 {
				t.Errorf("round %d, pair %d: b still has pending %v", round, i, got)
			}
		}
		if got := e.count("contacts"); got != 2*pairs {
			t.Errorf("round %d: got %d contact rows, want %d", round, got, 2*pairs)
		}
		if got := e.count("friend_requests WHERE state = 2"); got != pairs*(round+1) {
			t.Errorf("round %d: got %d accepted requests, want %d", round, got, pairs*(round+1))
		}
		for _, p := range ps {
			if _, err := c.RemoveContact(p.a.ctx(), &parleyv1.RemoveContactRequest{UserId: p.b.user.GetId()}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestRemoveContactEndsItForBoth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, rpcLoose)
	c, m := e.contacts(), e.rpcMessages()
	alice, bob := e.signUp("alice"), e.signUp("bob")
	rpcPrivacy(t, e, bob, parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY)
	befriend(t, c, alice, bob)
	conv := rpcSend(t, m, alice, rpcToUser(bob.user.GetId(), "hi friend")).GetConversationId()

	if _, err := c.RemoveContact(bob.ctx(), &parleyv1.RemoveContactRequest{UserId: alice.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	if a, b := contactIDs(t, c, alice), contactIDs(t, c, bob); len(a)+len(b) != 0 {
		t.Errorf("got contacts %v and %v, want none on either side", a, b)
	}
	_, err := c.RemoveContact(alice.ctx(), &parleyv1.RemoveContactRequest{UserId: bob.user.GetId()})
	wantCode(t, err, connect.CodeNotFound)
	// The conversation and its history stay; bob's privacy now refuses alice.
	if res, err := m.ListMessages(alice.ctx(), &parleyv1.ListMessagesRequest{ConversationId: conv}); err != nil || len(res.GetMessages()) != 1 {
		t.Errorf("alice's history: got %v, %v, want the one message", res, err)
	}
	_, err = m.Send(alice.ctx(), rpcToConv(conv, "still there?"))
	wantCode(t, err, connect.CodePermissionDenied)

	removed := func(u account) *parleyv1.SystemContent {
		return &parleyv1.SystemContent{Event: &parleyv1.SystemContent_ContactRemoved{ContactRemoved: &parleyv1.ContactRemoved{UserId: u.user.GetId()}}}
	}
	for _, tc := range []struct {
		owner, other account
	}{{alice, bob}, {bob, alice}} {
		log, senders := accountLog(t, e, tc.owner)
		if len(log) == 0 {
			t.Fatalf("%s's log is empty", tc.owner.user.GetUsername())
		}
		if diff := cmp.Diff(removed(tc.other), log[len(log)-1], protocmp.Transform()); diff != "" || senders[len(senders)-1] != bob.user.GetId() {
			t.Errorf("%s's last entry by %s (-want +got):\n%s", tc.owner.user.GetUsername(), senders[len(senders)-1], diff)
		}
	}
	// They may become contacts again.
	befriend(t, c, alice, bob)
	rpcSend(t, m, alice, rpcToConv(conv, "back"))
}

func TestContactRemarksNameTheConversation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, rpcLoose)
	c, m := e.contacts(), e.rpcMessages()
	alice, bob := e.signUp("alice"), e.signUp("bob")
	befriend(t, c, alice, bob)
	conv := rpcSend(t, m, alice, rpcToUser(bob.user.GetId(), "hi")).GetConversationId()
	title := func(a account) string {
		t.Helper()
		res, err := m.GetConversation(a.ctx(), &parleyv1.GetConversationRequest{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetConversation().GetTitle()
	}

	stream, _ := rpcSubscribe(t, m, alice)
	res, err := c.SetContactRemark(alice.ctx(), &parleyv1.SetContactRemarkRequest{UserId: bob.user.GetId(), Remark: "Bobby 🎸"})
	if err != nil {
		t.Fatal(err)
	}
	// Alice's devices, the one that set it too, get the conversation retitled.
	for {
		ev := rpcReceive(t, stream)
		if up := ev.GetConversation().GetUpdated(); up != nil {
			if up.GetId() != conv || up.GetTitle() != "Bobby 🎸" {
				t.Errorf("got updated conversation %v, want %s titled Bobby 🎸", up, conv)
			}
			break
		}
	}
	if res.GetContact().GetRemark() != "Bobby 🎸" || res.GetContact().GetUser().GetId() != bob.user.GetId() {
		t.Fatalf("got %v, want bob remarked Bobby 🎸", res)
	}
	if got := title(alice); got != "Bobby 🎸" {
		t.Errorf("alice's title: got %q, want her remark", got)
	}
	if got := title(bob); got != "User alice" {
		t.Errorf("bob's title: got %q, want alice's display name", got)
	}
	list, err := c.ListContacts(alice.ctx(), &parleyv1.ListContactsRequest{})
	if err != nil || len(list.GetContacts()) != 1 || list.GetContacts()[0].GetRemark() != "Bobby 🎸" {
		t.Errorf("alice's contacts: got %v, %v, want bob with the remark", list, err)
	}
	if _, err := c.SetContactRemark(alice.ctx(), &parleyv1.SetContactRemarkRequest{UserId: bob.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	if got := title(alice); got != "User bob" {
		t.Errorf("alice's title after clearing: got %q, want bob's display name", got)
	}
	_, err = c.SetContactRemark(alice.ctx(), &parleyv1.SetContactRemarkRequest{UserId: bob.user.GetId(), Remark: strings.Repeat("r", 65)})
	wantCode(t, err, connect.CodeInvalidArgument)

	log, _ := accountLog(t, e, alice)
	remark := func(r string) *parleyv1.SystemContent {
		return &parleyv1.SystemContent{Event: &parleyv1.SystemContent_SettingsChanged{SettingsChanged: &parleyv1.SettingsChanged{
			Setting: &parleyv1.SettingsChanged_ContactRemark{ContactRemark: &parleyv1.ContactRemarkChanged{UserId: bob.user.GetId(), Remark: r}},
		}}}
	}
	if diff := cmp.Diff([]*parleyv1.SystemContent{remark("Bobby 🎸"), remark("")}, log[len(log)-2:], protocmp.Transform()); diff != "" {
		t.Errorf("alice's last entries (-want +got):\n%s", diff)
	}
	if bobLog, _ := accountLog(t, e, bob); len(bobLog) != 2 {
		t.Errorf("bob's log got %d entries, want only the request's two: remarks are private", len(bobLog))
	}
}

func TestContactListsPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.contacts()
	alice := e.signUp("alice")
	var others []account
	for i := range 5 {
		others = append(others, e.signUp(fmt.Sprintf("user%d", i)))
	}
	for _, o := range others {
		ask(t, c, o, alice, "")
	}
	newestFirst := make([]string, 0, len(others))
	for i := len(others) - 1; i >= 0; i-- {
		newestFirst = append(newestFirst, others[i].user.GetId())
	}

	pages := func(t *testing.T, list func(token string) ([]string, string, error)) []string {
		t.Helper()
		var all []string
		token := ""
		for range 10 {
			ids, next, err := list(token)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) > 2 {
				t.Fatalf("got a page of %d, want at most 2", len(ids))
			}
			all = append(all, ids...)
			if token = next; token == "" {
				return all
			}
		}
		t.Fatal("paging did not end")
		return nil
	}
	t.Run("friend requests", func(t *testing.T) {
		got := pages(t, func(token string) ([]string, string, error) {
			res, err := c.ListFriendRequests(alice.ctx(), &parleyv1.ListFriendRequestsRequest{Direction: incoming, PageSize: 2, PageToken: token})
			var ids []string
			for _, r := range res.GetFriendRequests() {
				ids = append(ids, r.GetFromUser().GetId())
			}
			return ids, res.GetNextPageToken(), err
		})
		if diff := cmp.Diff(newestFirst, got); diff != "" {
			t.Errorf("senders of incoming requests, newest first (-want +got):\n%s", diff)
		}
	})
	// Alice accepts them oldest first, so the newest contact is the last.
	for range others {
		reqs := requests(t, c, alice, incoming, pending)
		respond(t, c, alice, reqs[len(reqs)-1].GetId(), accept)
	}
	t.Run("contacts", func(t *testing.T) {
		got := pages(t, func(token string) ([]string, string, error) {
			res, err := c.ListContacts(alice.ctx(), &parleyv1.ListContactsRequest{PageSize: 2, PageToken: token})
			var ids []string
			for _, ct := range res.GetContacts() {
				ids = append(ids, ct.GetUser().GetId())
			}
			return ids, res.GetNextPageToken(), err
		})
		if diff := cmp.Diff(newestFirst, got); diff != "" {
			t.Errorf("contacts, newest first (-want +got):\n%s", diff)
		}
	})
	for _, o := range others {
		if _, err := c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: o.user.GetId()}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("blocked users", func(t *testing.T) {
		got := pages(t, func(token string) ([]string, string, error) {
			res, err := c.ListBlocked(alice.ctx(), &parleyv1.ListBlockedRequest{PageSize: 2, PageToken: token})
			var ids []string
			for _, b := range res.GetBlockedUsers() {
				ids = append(ids, b.GetUser().GetId())
			}
			return ids, res.GetNextPageToken(), err
		})
		if diff := cmp.Diff(newestFirst, got); diff != "" {
			t.Errorf("blocked users, newest first (-want +got):\n%s", diff)
		}
	})
	t.Run("a bad page token is refused", func(t *testing.T) {
		for _, token := range []string{"not base64!", "MTIz", "MTIzL25vdC1hLXV1aWQ"} {
			_, err := c.ListContacts(alice.ctx(), &parleyv1.ListContactsRequest{PageToken: token})
			wantCode(t, err, connect.CodeInvalidArgument)
		}
	})
}

func TestBlockStopsDirectMessagesBothWays(t *testing.T) {
	t.Parallel()
	e := newEnv(t, rpcLoose)
	c, m := e.contacts(), e.rpcMessages()
	alice, bob := e.signUp("alice"), e.signUp("bob")
	for _, a := range []account{alice, bob} {
		rpcPrivacy(t, e, a, parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE)
	}
	befriend(t, c, alice, bob)
	conv := rpcSend(t, m, alice, rpcToUser(bob.user.GetId(), "hi")).GetConversationId()

	res, err := c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: bob.user.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetBlockedUser().GetUser().GetId() != bob.user.GetId() || res.GetBlockedUser().GetBlockTime() == nil {
		t.Fatalf("got %v, want bob blocked with a time", res)
	}
	again, err := c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: bob.user.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(res, again, protocmp.Transform()); diff != "" {
		t.Errorf("blocking again changed the block (-first +again):\n%s", diff)
	}

	before := e.count(chatMessages)
	for _, tc := range []struct {
		name  string
		from  account
		req   *parleyv1.SendRequest
		words string // the message must contain these, and only the blocker may read "blocked"
	}{
		{"the blocked user to the conversation", bob, rpcToConv(conv, "why?"), "cannot send"},
		{"the blocked user by user id", bob, rpcToUser(alice.user.GetId(), "why?"), "cannot send"},
		{"the blocker to the conversation", alice, rpcToConv(conv, "bye"), "you blocked"},
		{"the blocker by user id", alice, rpcToUser(bob.user.GetId(), "bye"), "you blocked"},
	} {
		_, err := m.Send(tc.from.ctx(), tc.req)
		wantCode(t, err, connect.CodePermissionDenied)
		msg := errorMessage(err)
		if !strings.Contains(msg, tc.words) || tc.from.user.GetId() == bob.user.GetId() && strings.Contains(msg, "block") {
			t.Errorf("%s: got message %q", tc.name, msg)
		}
	}
	if got := e.count(chatMessages); got != before {
		t.Errorf("refused messages stored %d", got-before)
	}
	// A contact stays a contact, and the block is the blocker's to list.
	if got := contactIDs(t, c, bob); len(got) != 1 {
		t.Errorf("bob's contacts: got %v, want alice still", got)
	}
	blocked, err := c.ListBlocked(alice.ctx(), &parleyv1.ListBlockedRequest{})
	if err != nil || len(blocked.GetBlockedUsers()) != 1 || blocked.GetBlockedUsers()[0].GetUser().GetId() != bob.user.GetId() {
		t.Errorf("alice's blocked users: got %v, %v, want bob", blocked, err)
	}
	if theirs, err := c.ListBlocked(bob.ctx(), &parleyv1.ListBlockedRequest{}); err != nil || len(theirs.GetBlockedUsers()) != 0 {
		t.Errorf("bob's blocked users: got %v, %v, want none", theirs, err)
	}
	_, err = c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: alice.user.GetId()})
	wantCode(t, err, connect.CodeInvalidArgument)

	// Unblocking restores the conversation both ways.
	if _, err := c.UnblockUser(alice.ctx(), &parleyv1.UnblockUserRequest{UserId: bob.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UnblockUser(alice.ctx(), &parleyv1.UnblockUserRequest{UserId: bob.user.GetId()}); err != nil {
		t.Errorf("unblocking again: %v", err)
	}
	rpcSend(t, m, bob, rpcToConv(conv, "friends again?"))
	rpcSend(t, m, alice, rpcToConv(conv, "yes"))

	log, _ := accountLog(t, e, alice)
	want := []*parleyv1.SystemContent{
		{Event: &parleyv1.SystemContent_UserBlocked{UserBlocked: &parleyv1.UserBlocked{UserId: bob.user.GetId()}}},
		{Event: &parleyv1.SystemContent_UserUnblocked{UserUnblocked: &parleyv1.UserUnblocked{UserId: bob.user.GetId()}}},
	}
	if diff := cmp.Diff(want, log[len(log)-2:], protocmp.Transform()); diff != "" {
		t.Errorf("alice's last entries (-want +got):\n%s", diff)
	}
	bobLog, _ := accountLog(t, e, bob)
	for _, entry := range bobLog {
		if entry.GetUserBlocked() != nil || entry.GetUserUnblocked() != nil {
			t.Errorf("bob's log has %v: he must never be told of the block", entry)
		}
	}
}

// A block before any conversation exists creates none, whoever tries.
func TestBlockRefusesANewDirectConversation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, rpcLoose)
	c, m := e.contacts(), e.rpcMessages()
	alice, bob := e.signUp("alice"), e.signUp("bob")
	if _, err := c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: bob.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Send(bob.ctx(), rpcToUser(alice.user.GetId(), "hi"))
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = m.CreateDirectConversation(bob.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: alice.user.GetId()})
	wantCode(t, err, connect.CodePermissionDenied)
	_, err = m.CreateDirectConversation(alice.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: bob.user.GetId()})
	wantCode(t, err, connect.CodePermissionDenied)
	if got := e.count(chatConversations); got != 0 {
		t.Errorf("got %d conversations, want none", got)
	}
	// Under friends only, a blocked stranger is told only the privacy rule.
	rpcPrivacy(t, e, alice, parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY)
	_, err = m.Send(bob.ctx(), rpcToUser(alice.user.GetId(), "hi"))
	wantCode(t, err, connect.CodePermissionDenied)
	if msg := errorMessage(err); !strings.Contains(msg, "contacts only") {
		t.Errorf("got message %q, want the friends-only refusal", msg)
	}
}

// Friend requests across a block: the user blocked sees theirs as sent; the
// blocker never sees it until they unblock.
func TestBlockHidesFriendRequestsWithoutRevealingIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.contacts()
	alice, bob, carol := e.signUp("alice"), e.signUp("bob"), e.signUp("carol")

	// Pending requests end at the block like a decline or a cancel.
	fromAlice := ask(t, c, alice, bob, "").GetFriendRequest()
	toCarol := ask(t, c, bob, carol, "").GetFriendRequest()
	for _, u := range []account{alice, carol} {
		if _, err := c.BlockUser(bob.ctx(), &parleyv1.BlockUserRequest{UserId: u.user.GetId()}); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{fromAlice.GetId() + " " + declined.String()}, requestStates(requests(t, c, alice, outgoing, 0))); diff != "" {
		t.Errorf("alice's outgoing (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{toCarol.GetId() + " " + cancelled.String()}, requestStates(requests(t, c, carol, incoming, 0))); diff != "" {
		t.Errorf("carol's incoming (-want +got):\n%s", diff)
	}

	// Alice asks again: it looks sent to her, and bob sees nothing.
	bobLogBefore, _ := accountLog(t, e, bob)
	hidden := ask(t, c, alice, bob, "did you block me?").GetFriendRequest()
	if hidden.GetState() != pending || hidden.GetId() == fromAlice.GetId() {
		t.Fatalf("got %v, want a new pending request", hidden)
	}
	if again := ask(t, c, alice, bob, "").GetFriendRequest(); again.GetId() != hidden.GetId() {
		t.Errorf("asking again got %s, want the pending %s", again.GetId(), hidden.GetId())
	}
	if got := requests(t, c, alice, outgoing, pending); len(got) != 1 || got[0].GetId() != hidden.GetId() {
		t.Errorf("alice's pending outgoing: got %v, want the new request", got)
	}
	if got := requests(t, c, bob, incoming, pending); len(got) != 0 {
		t.Errorf("bob's pending incoming: got %v, want none", got)
	}
	_, err := c.RespondFriendRequest(bob.ctx(), &parleyv1.RespondFriendRequestRequest{RequestId: hidden.GetId(), Decision: accept})
	wantCode(t, err, connect.CodeNotFound)
	if log, _ := accountLog(t, e, bob); len(log) != len(bobLogBefore) {
		t.Errorf("bob's log grew by %d entries, want none", len(log)-len(bobLogBefore))
	}
	aliceLog, _ := accountLog(t, e, alice)
	if diff := cmp.Diff(requestEntry(hidden, pending), aliceLog[len(aliceLog)-1], protocmp.Transform()); diff != "" {
		t.Errorf("alice's last entry (-want +got):\n%s", diff)
	}

	// The blocker knows of their block.
	_, err = c.SendFriendRequest(bob.ctx(), &parleyv1.SendFriendRequestRequest{UserId: alice.user.GetId()})
	wantCode(t, err, connect.CodePermissionDenied)
	if msg := errorMessage(err); !strings.Contains(msg, "you blocked") {
		t.Errorf("got message %q, want it to say bob blocked alice", msg)
	}

	// Unblocking delivers the waiting request, which bob may then accept.
	if _, err := c.UnblockUser(bob.ctx(), &parleyv1.UnblockUserRequest{UserId: alice.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	got := requests(t, c, bob, incoming, pending)
	if len(got) != 1 || got[0].GetId() != hidden.GetId() || got[0].GetGreeting() != "did you block me?" {
		t.Fatalf("bob's pending incoming after unblocking: got %v, want alice's request", got)
	}
	bobLog, senders := accountLog(t, e, bob)
	if diff := cmp.Diff(requestEntry(hidden, pending), bobLog[len(bobLog)-1], protocmp.Transform()); diff != "" || senders[len(senders)-1] != alice.user.GetId() {
		t.Errorf("bob's last entry, by %s (-want +got):\n%s", senders[len(senders)-1], diff)
	}
	respond(t, c, bob, hidden.GetId(), accept)
	if got := contactIDs(t, c, alice); len(got) != 1 || got[0] != bob.user.GetId() {
		t.Errorf("alice's contacts: got %v, want bob", got)
	}

	// A hidden request may be cancelled by its sender, telling nobody else.
	if _, err := c.BlockUser(carol.ctx(), &parleyv1.BlockUserRequest{UserId: alice.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	toBlocker := ask(t, c, alice, carol, "").GetFriendRequest()
	carolLog, _ := accountLog(t, e, carol)
	if _, err := c.CancelFriendRequest(alice.ctx(), &parleyv1.CancelFriendRequestRequest{RequestId: toBlocker.GetId()}); err != nil {
		t.Fatal(err)
	}
	if after, _ := accountLog(t, e, carol); len(after) != len(carolLog) {
		t.Errorf("carol's log grew by %d entries, want none", len(after)-len(carolLog))
	}
	if _, err := c.UnblockUser(carol.ctx(), &parleyv1.UnblockUserRequest{UserId: alice.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	if got := requests(t, c, carol, incoming, 0); len(got) != 1 || got[0].GetId() != toCarol.GetId() {
		t.Errorf("carol's incoming: got %v, want only bob's old request", got)
	}
}

// The privacy setting decides who may message a user directly; contacts
// always may, and becoming contacts lifts the stranger limit at once.
func TestStrangerPolicyFollowsContacts(t *testing.T) {
	t.Parallel()
	const (
		everyone = parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE
		friends  = parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY
		limited  = parleyv1.MessagePrivacy_MESSAGE_PRIVACY_STRANGERS_LIMITED
	)
	for _, tc := range []struct {
		name    string
		privacy parleyv1.MessagePrivacy
		// admitted is how many messages a stranger gets through before a refusal (-1: never refused).
		admitted int
	}{
		{"everyone admits a stranger's messages", everyone, -1},
		{"friends only refuses a stranger's first message", friends, 0},
		{"strangers limited admits a stranger's first three", limited, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, rpcLoose)
			c, m := e.contacts(), e.rpcMessages()
			alice, bob := e.signUp("alice"), e.signUp("bob")
			rpcPrivacy(t, e, bob, tc.privacy)
			sent := 0
			for range 5 {
				_, err := m.Send(alice.ctx(), rpcToUser(bob.user.GetId(), "hello?"))
				if err != nil {
					wantCode(t, err, connect.CodePermissionDenied)
					break
				}
				sent++
			}
			if want := tc.admitted; want == -1 && sent != 5 || want >= 0 && sent != want {
				t.Fatalf("a stranger got %d messages through, want %d (-1: all)", sent, tc.admitted)
			}
			// A friend request is answered, and at once alice may write.
			befriend(t, c, alice, bob)
			for range 5 {
				rpcSend(t, m, alice, rpcToUser(bob.user.GetId(), "friends now"))
			}
		})
	}
	t.Run("under strangers limited a reply lifts the limit, and accepting does at once", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c, m := e.contacts(), e.rpcMessages()
		alice, bob, carol := e.signUp("alice"), e.signUp("bob"), e.signUp("carol")
		var conv string
		for range 3 {
			conv = rpcSend(t, m, alice, rpcToUser(bob.user.GetId(), "hi")).GetConversationId()
		}
		_, err := m.Send(alice.ctx(), rpcToConv(conv, "fourth"))
		wantCode(t, err, connect.CodePermissionDenied)
		// Alice asks, bob accepts: the next message passes.
		r := ask(t, c, alice, bob, "let me through").GetFriendRequest()
		_, err = m.Send(alice.ctx(), rpcToConv(conv, "still limited"))
		wantCode(t, err, connect.CodePermissionDenied) // a request alone changes nothing
		respond(t, c, bob, r.GetId(), accept)
		rpcSend(t, m, alice, rpcToConv(conv, "fourth"))

		// Carol is limited by bob until bob replies.
		for range 3 {
			conv = rpcSend(t, m, carol, rpcToUser(bob.user.GetId(), "hi")).GetConversationId()
		}
		_, err = m.Send(carol.ctx(), rpcToConv(conv, "fourth"))
		wantCode(t, err, connect.CodePermissionDenied)
		rpcSend(t, m, bob, rpcToConv(conv, "hello carol"))
		rpcSend(t, m, carol, rpcToConv(conv, "fourth"))
	})
	t.Run("under friends only a contact may open the conversation, a former contact may not write", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, rpcLoose)
		c, m := e.contacts(), e.rpcMessages()
		alice, bob := e.signUp("alice"), e.signUp("bob")
		rpcPrivacy(t, e, bob, friends)
		_, err := m.CreateDirectConversation(alice.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: bob.user.GetId()})
		wantCode(t, err, connect.CodePermissionDenied)
		befriend(t, c, bob, alice)
		res, err := m.CreateDirectConversation(alice.ctx(), &parleyv1.CreateDirectConversationRequest{UserId: bob.user.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		conv := res.GetConversation().GetId()
		rpcSend(t, m, alice, rpcToConv(conv, "hi"))
		if _, err := c.RemoveContact(alice.ctx(), &parleyv1.RemoveContactRequest{UserId: bob.user.GetId()}); err != nil {
			t.Fatal(err)
		}
		_, err = m.Send(alice.ctx(), rpcToConv(conv, "hi again"))
		wantCode(t, err, connect.CodePermissionDenied)
		// Bob's own privacy does not stop him writing to alice.
		rpcSend(t, m, bob, rpcToConv(conv, "I can still write"))
	})
}

// Every contact change reaches all the user's devices: live on an open
// stream (the account entry and a ContactEvent), and through Sync on a
// device that was offline.
func TestContactChangesReachEveryDevice(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		e := newEnv(t)
		c, m := e.contacts(opts...), e.msgs(opts...)
		alice, bob, carol := e.signUp("alice", opts...), e.signUp("bob", opts...), e.signUp("carol", opts...)
		phone := e.login(bob, opts...)

		start, err := m.Sync(bob.ctx(), &parleyv1.SyncRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(bob.ctx(), 20*time.Second)
		defer cancel()
		stream, err := m.Subscribe(ctx, &parleyv1.SubscribeRequest{Cursors: start.GetPositions()})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for ev := rpcReceive(t, stream); ev.GetHeartbeat() == nil; ev = rpcReceive(t, stream) {
		}

		// Alice asks; bob's phone accepts, blocks and unblocks carol,
		// remarks alice, then removes her.
		r := ask(t, c, alice, bob, "hi").GetFriendRequest()
		respond(t, c, phone, r.GetId(), accept)
		for _, call := range []func() error{
			func() error {
				_, err := c.BlockUser(phone.ctx(), &parleyv1.BlockUserRequest{UserId: carol.user.GetId()})
				return err
			},
			func() error {
				_, err := c.UnblockUser(phone.ctx(), &parleyv1.UnblockUserRequest{UserId: carol.user.GetId()})
				return err
			},
			func() error {
				_, err := c.SetContactRemark(phone.ctx(), &parleyv1.SetContactRemarkRequest{UserId: alice.user.GetId(), Remark: "Al"})
				return err
			},
			func() error {
				_, err := c.RemoveContact(phone.ctx(), &parleyv1.RemoveContactRequest{UserId: alice.user.GetId()})
				return err
			},
		} {
			if err := call(); err != nil {
				t.Fatal(err)
			}
		}
		aliceID, carolID := alice.user.GetId(), carol.user.GetId()
		wantEntries := []*parleyv1.SystemContent{
			requestEntry(r, pending),
			requestEntry(r, accepted),
			{Event: &parleyv1.SystemContent_UserBlocked{UserBlocked: &parleyv1.UserBlocked{UserId: carolID}}},
			{Event: &parleyv1.SystemContent_UserUnblocked{UserUnblocked: &parleyv1.UserUnblocked{UserId: carolID}}},
			{Event: &parleyv1.SystemContent_SettingsChanged{SettingsChanged: &parleyv1.SettingsChanged{
				Setting: &parleyv1.SettingsChanged_ContactRemark{ContactRemark: &parleyv1.ContactRemarkChanged{UserId: aliceID, Remark: "Al"}},
			}}},
			{Event: &parleyv1.SystemContent_ContactRemoved{ContactRemoved: &parleyv1.ContactRemoved{UserId: aliceID}}},
		}
		// What each ContactEvent is about, in order.
		wantEvents := []string{
			"request " + r.GetId() + " " + pending.String(),
			"request " + r.GetId() + " " + accepted.String(),
			"contact " + aliceID + " ",
			"blocked " + carolID,
			"unblocked " + carolID,
			"contact " + aliceID + " Al",
			"removed " + aliceID,
		}
		var entries []*parleyv1.SystemContent
		var events []string
		for len(entries) < len(wantEntries) || len(events) < len(wantEvents) {
			ev := rpcReceive(t, stream)
			if msg := ev.GetMessage(); msg != nil {
				if msg.GetConversationId() != bob.accountConv {
					t.Fatalf("got message %v outside bob's account conversation", msg)
				}
				entries = append(entries, msg.GetSystem())
			}
			switch ce := ev.GetContact(); {
			case ce.GetFriendRequest() != nil:
				events = append(events, "request "+ce.GetFriendRequest().GetId()+" "+ce.GetFriendRequest().GetState().String())
			case ce.GetContact() != nil:
				events = append(events, "contact "+ce.GetContact().GetUser().GetId()+" "+ce.GetContact().GetRemark())
			case ce.GetBlockedUser() != nil:
				events = append(events, "blocked "+ce.GetBlockedUser().GetUser().GetId())
			case ce.GetUnblockedUserId() != "":
				events = append(events, "unblocked "+ce.GetUnblockedUserId())
			case ce.GetRemovedContactUserId() != "":
				events = append(events, "removed "+ce.GetRemovedContactUserId())
			}
		}
		if diff := cmp.Diff(wantEntries, entries, protocmp.Transform()); diff != "" {
			t.Errorf("account entries on the open stream (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantEvents, events); diff != "" {
			t.Errorf("contact events on the open stream (-want +got):\n%s", diff)
		}

		// A device that was offline gets the same entries from its cursors.
		later, err := m.Sync(e.login(bob, opts...).ctx(), &parleyv1.SyncRequest{Cursors: start.GetPositions()})
		if err != nil {
			t.Fatal(err)
		}
		var synced []*parleyv1.SystemContent
		for _, msg := range later.GetMessages() {
			if msg.GetConversationId() == bob.accountConv {
				synced = append(synced, msg.GetSystem())
			}
		}
		if diff := cmp.Diff(wantEntries, synced, protocmp.Transform()); diff != "" {
			t.Errorf("entries through Sync (-want +got):\n%s", diff)
		}
		// Carol is never told of the block.
		if log, _ := accountLog(t, e, carol); len(log) != 0 {
			t.Errorf("carol's log got %v, want nothing", log)
		}
	})
}

// A blocker's presence is hidden from the user blocked, and theirs from the
// blocker, as long as the block lasts.
func TestBlockHidesPresence(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.contacts()
	alice, bob, _ := e.pair("alice", "bob")
	carol := e.signUp("carol")
	rpcPrivacy(t, e, carol, parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE)
	rpcSend(t, e.rpcMessages(), alice, rpcToUser(carol.user.GetId(), "hi"))
	if _, err := c.BlockUser(alice.ctx(), &parleyv1.BlockUserRequest{UserId: bob.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	m := e.rpcMessages()
	carols, _ := rpcSubscribe(t, m, carol)
	rpcSubscribe(t, m, bob) // bob is online

	// Alice comes online: carol is told, bob is not.
	rpcSubscribe(t, m, alice)
	if p := nextPresence(t, carols); p.GetUserId() != alice.user.GetId() || !p.GetOnline() {
		t.Fatalf("carol got %v, want alice online", p)
	}
	if containsOnline(openStreamEvents(t, e, bob), alice.user.GetId()) {
		t.Error("a new stream of bob's lists alice online though she blocked him")
	}
	if containsOnline(openStreamEvents(t, e, alice), bob.user.GetId()) {
		t.Error("a new stream of alice's lists bob online though she blocked him")
	}
	// Unblocked, bob sees her again.
	if _, err := c.UnblockUser(alice.ctx(), &parleyv1.UnblockUserRequest{UserId: bob.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	if !containsOnline(openStreamEvents(t, e, bob), alice.user.GetId()) {
		t.Error("after the unblock, a new stream of bob's does not list alice online")
	}
	if !containsOnline(openStreamEvents(t, e, alice), bob.user.GetId()) {
		t.Error("after the unblock, a new stream of alice's does not list bob online")
	}
}

// A contact change on one node reaches the user's streams on another, through
// Redis, with no heartbeat to fall back on.
func TestContactChangesCrossNodes(t *testing.T) {
	t.Parallel()
	ch := testChannel()
	n1, n2 := twoNodes(t, redisURL(t), ch, ch, time.Hour)
	alice, bob := n1.signUp("alice"), n1.signUp("bob")
	stream, _ := rpcSubscribe(t, n2.rpcMessages(), bob)

	r := ask(t, n1.contacts(), alice, bob, "from node 1").GetFriendRequest()
	var entry *parleyv1.SystemContent
	var live *parleyv1.FriendRequest
	for entry == nil || live == nil {
		ev := rpcReceive(t, stream)
		if m := ev.GetMessage(); m.GetConversationId() == bob.accountConv {
			entry = m.GetSystem()
		}
		if fr := ev.GetContact().GetFriendRequest(); fr != nil {
			live = fr
		}
	}
	if diff := cmp.Diff(requestEntry(r, pending), entry, protocmp.Transform()); diff != "" {
		t.Errorf("entry on node 2 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(r, live, protocmp.Transform()); diff != "" {
		t.Errorf("contact event on node 2 (-want +got):\n%s", diff)
	}
}

// When both block each other, each unblock lifts only its own block.
func TestMutualBlocksLiftOneAtATime(t *testing.T) {
	t.Parallel()
	e := newEnv(t, rpcLoose)
	c, m := e.contacts(), e.rpcMessages()
	alice, bob, conv := e.pair("alice", "bob")
	for _, pair := range [][2]account{{alice, bob}, {bob, alice}} {
		if _, err := c.BlockUser(pair[0].ctx(), &parleyv1.BlockUserRequest{UserId: pair[1].user.GetId()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, from := range []account{alice, bob} {
		_, err := m.Send(from.ctx(), rpcToConv(conv, "hello?"))
		wantCode(t, err, connect.CodePermissionDenied)
		if msg := errorMessage(err); !strings.Contains(msg, "you blocked") {
			t.Errorf("%s got %q, want to be told of their own block", from.user.GetUsername(), msg)
		}
	}
	if _, err := c.UnblockUser(alice.ctx(), &parleyv1.UnblockUserRequest{UserId: bob.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Send(alice.ctx(), rpcToConv(conv, "hello?"))
	wantCode(t, err, connect.CodePermissionDenied) // bob still blocks her
	if msg := errorMessage(err); strings.Contains(msg, "block") {
		t.Errorf("alice got %q, which names bob's block", msg)
	}
	_, err = m.Send(bob.ctx(), rpcToConv(conv, "hello?"))
	wantCode(t, err, connect.CodePermissionDenied) // his own block
	if _, err := c.UnblockUser(bob.ctx(), &parleyv1.UnblockUserRequest{UserId: alice.user.GetId()}); err != nil {
		t.Fatal(err)
	}
	rpcSend(t, m, alice, rpcToConv(conv, "hello"))
	rpcSend(t, m, bob, rpcToConv(conv, "hi"))
}
