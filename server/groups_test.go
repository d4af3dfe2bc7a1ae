package server_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func (e *env) groups(opts ...connect.ClientOption) parleyv1connect.GroupsServiceClient {
	return parleyv1connect.NewGroupsServiceClient(e.client, e.srv.URL, opts...)
}

// groupEnv is a server with its two clients. The users it signs up are all
// each other's contacts, since only contacts may be added to a group.
type groupEnv struct {
	*env
	g      parleyv1connect.GroupsServiceClient
	m      parleyv1connect.MessagesServiceClient
	circle *friendCircle
}

// friendCircle is the users of a groupEnv, all each other's contacts.
type friendCircle struct {
	mu    sync.Mutex
	users []account
}

func newGroupEnv(t *testing.T, opts []connect.ClientOption, edit ...func(*server.Config)) groupEnv {
	e := newEnv(t, append([]func(*server.Config){rpcLoose}, edit...)...)
	return groupEnvOn(e, opts...)
}

func groupEnvOn(e *env, opts ...connect.ClientOption) groupEnv {
	return groupEnv{env: e, g: e.groups(opts...), m: e.rpcMessages(opts...), circle: &friendCircle{}}
}

// signUp signs up a user who becomes the contact of everyone signed up before.
func (ge groupEnv) signUp(name string) account { return ge.befriendAll(ge.t, ge.env.signUp(name)) }

// befriendAll makes a the contact of everyone in the circle, and one of them.
func (ge groupEnv) befriendAll(t testing.TB, a account) account {
	t.Helper()
	ge.circle.mu.Lock()
	defer ge.circle.mu.Unlock()
	c := ge.contacts()
	for _, other := range ge.circle.users {
		befriend(t, c, other, a)
	}
	ge.circle.users = append(ge.circle.users, a)
	return a
}

func ids(accs ...account) []string {
	out := make([]string, 0, len(accs))
	for _, a := range accs {
		out = append(out, a.user.GetId())
	}
	return out
}

// create has owner create a group named name with members.
func (ge groupEnv) create(t testing.TB, owner account, name string, members ...account) *parleyv1.Group {
	t.Helper()
	res, err := ge.g.CreateGroup(owner.ctx(), &parleyv1.CreateGroupRequest{Name: name, MemberIds: ids(members...)})
	if err != nil {
		t.Fatalf("CreateGroup(%s): %v", name, err)
	}
	return res.GetGroup()
}

func (ge groupEnv) get(t testing.TB, who account, groupID string) *parleyv1.GetGroupResponse {
	t.Helper()
	res, err := ge.g.GetGroup(who.ctx(), &parleyv1.GetGroupRequest{GroupId: groupID})
	if err != nil {
		t.Fatalf("GetGroup(%s): %v", who.user.GetUsername(), err)
	}
	return res
}

// log returns the entries of a conversation that who sees, oldest first.
func (ge groupEnv) log(t testing.TB, who account, convID string) []*parleyv1.Message {
	t.Helper()
	res, err := ge.m.ListMessages(who.ctx(), &parleyv1.ListMessagesRequest{ConversationId: convID, Limit: 200})
	if err != nil {
		t.Fatalf("ListMessages(%s): %v", who.user.GetUsername(), err)
	}
	return res.GetMessages()
}

func (ge groupEnv) must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func systemOf(m *parleyv1.Message) *parleyv1.SystemContent { return m.GetSystem() }

// lastSystem returns the system content of the newest entry who sees.
func (ge groupEnv) lastSystem(t testing.TB, who account, convID string) *parleyv1.Message {
	t.Helper()
	log := ge.log(t, who, convID)
	if len(log) == 0 {
		t.Fatal("empty log")
	}
	return log[len(log)-1]
}

func TestGroupCreateGetListAndMembers(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		ge := newGroupEnv(t, opts)
		alice, bob, carol, dave := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol"), ge.signUp("dave")

		res, err := ge.g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: "Climbers", MemberIds: ids(bob, carol, alice)})
		ge.must(t, "CreateGroup", err)
		g := res.GetGroup()
		if g.GetId() == "" || g.GetId() != g.GetConversationId() || g.GetName() != "Climbers" || g.GetOwnerId() != alice.user.GetId() ||
			g.GetMemberCount() != 3 || g.GetDissolved() || g.GetCreateTime() == nil {
			t.Fatalf("group %v: want Climbers owned by alice with 3 members (the caller named in member_ids counts once)", g)
		}
		conv := res.GetConversation()
		if conv.GetId() != g.GetId() || conv.GetKind() != parleyv1.ConversationKind_CONVERSATION_KIND_GROUP || conv.GetTitle() != "Climbers" ||
			conv.GetGroupId() != g.GetId() || conv.GetLastSeq() != 1 || conv.GetUnreadCount() != 0 || conv.GetMemberCount() != 3 {
			t.Errorf("creator's conversation %v: want the group's, titled Climbers, at seq 1 with nothing unread", conv)
		}
		want := &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupCreated{GroupCreated: &parleyv1.GroupCreated{Name: "Climbers", MemberIds: ids(bob, carol)}}}
		if log := ge.log(t, bob, g.GetId()); len(log) != 1 || log[0].GetSenderId() != alice.user.GetId() {
			t.Fatalf("bob's log %v, want one GroupCreated entry by alice", log)
		} else if diff := cmp.Diff(want, systemOf(log[0]), protocmp.Transform()); diff != "" {
			t.Errorf("GroupCreated (-want +got):\n%s", diff)
		}
		bobConv, err := ge.m.GetConversation(bob.ctx(), &parleyv1.GetConversationRequest{ConversationId: g.GetId()})
		ge.must(t, "GetConversation", err)
		if c := bobConv.GetConversation(); c.GetUnreadCount() != 1 || c.GetMembership() != parleyv1.MembershipState_MEMBERSHIP_STATE_ACTIVE {
			t.Errorf("member's conversation %v: want 1 unread, active", c)
		}

		got := ge.get(t, bob, g.GetId())
		if diff := cmp.Diff(g, got.GetGroup(), protocmp.Transform()); diff != "" {
			t.Errorf("GetGroup (-create +get):\n%s", diff)
		}
		if got.GetMembership().GetUserId() != bob.user.GetId() || got.GetMembership().GetRole() != parleyv1.MemberRole_MEMBER_ROLE_MEMBER {
			t.Errorf("membership %v, want bob as MEMBER", got.GetMembership())
		}

		ge.must(t, "SetMemberRole", func() error {
			_, err := ge.g.SetMemberRole(alice.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g.GetId(), UserId: carol.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			return err
		}())
		var members []string
		var roles []parleyv1.MemberRole
		token := ""
		for pages := 0; ; pages++ {
			if pages > 4 {
				t.Fatal("paging does not end")
			}
			_, err := ge.g.ListMembers(dave.ctx(), &parleyv1.ListMembersRequest{GroupId: g.GetId(), PageSize: 1, PageToken: token})
			wantCode(t, err, connect.CodeNotFound) // dave is not in it
			page, err := ge.g.ListMembers(bob.ctx(), &parleyv1.ListMembersRequest{GroupId: g.GetId(), PageSize: 1, PageToken: token})
			ge.must(t, "ListMembers", err)
			for i, m := range page.GetMembers() {
				members = append(members, m.GetUserId())
				roles = append(roles, m.GetRole())
				if page.GetUsers()[i].GetId() != m.GetUserId() {
					t.Errorf("users[%d] is %s, want the member %s", i, page.GetUsers()[i].GetId(), m.GetUserId())
				}
			}
			if token = page.GetNextPageToken(); token == "" {
				break
			}
		}
		if diff := cmp.Diff(ids(alice, carol, bob), members); diff != "" {
			t.Errorf("members: owner, admins, members (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]parleyv1.MemberRole{1, 2, 3}, roles); diff != "" {
			t.Errorf("roles (-want +got):\n%s", diff)
		}

		second := ge.create(t, bob, "Second", alice)
		list, err := ge.g.ListGroups(alice.ctx(), &parleyv1.ListGroupsRequest{})
		ge.must(t, "ListGroups", err)
		if len(list.GetGroups()) != 2 || list.GetGroups()[0].GetId() != second.GetId() || list.GetGroups()[1].GetId() != g.GetId() {
			t.Errorf("alice's groups %v, want Second then Climbers (most recently joined first)", list.GetGroups())
		}
		page, err := ge.g.ListGroups(alice.ctx(), &parleyv1.ListGroupsRequest{PageSize: 1})
		ge.must(t, "ListGroups", err)
		if len(page.GetGroups()) != 1 || page.GetNextPageToken() == "" {
			t.Errorf("page of 1: %v, want one group and a next page", page)
		}
		if list, err := ge.g.ListGroups(dave.ctx(), &parleyv1.ListGroupsRequest{}); err != nil || len(list.GetGroups()) != 0 {
			t.Errorf("an outsider's groups: %v, %v; want none", list, err)
		}

		bad := []struct {
			name string
			req  *parleyv1.CreateGroupRequest
			want connect.Code
		}{
			{"an empty name is invalid", &parleyv1.CreateGroupRequest{Name: ""}, connect.CodeInvalidArgument},
			{"a blank name is invalid", &parleyv1.CreateGroupRequest{Name: "   "}, connect.CodeInvalidArgument},
			{"a name of 65 characters is invalid", &parleyv1.CreateGroupRequest{Name: strings.Repeat("é", 65)}, connect.CodeInvalidArgument},
			{"a member id that is not a uuid is invalid", &parleyv1.CreateGroupRequest{Name: "x", MemberIds: []string{"bob"}}, connect.CodeInvalidArgument},
			{"an unknown member is not found", &parleyv1.CreateGroupRequest{Name: "x", MemberIds: []string{newUUID()}}, connect.CodeNotFound},
			{"an avatar that is not the caller's media is not found", &parleyv1.CreateGroupRequest{Name: "x", AvatarMediaId: newUUID()}, connect.CodeNotFound},
		}
		for _, tt := range bad {
			t.Run(tt.name, func(t *testing.T) {
				before := ge.in(t).count("groups")
				_, err := ge.g.CreateGroup(alice.ctx(), tt.req)
				wantCode(t, err, tt.want)
				if after := ge.in(t).count("groups"); after != before {
					t.Errorf("got %d groups after a refused CreateGroup, want %d", after, before)
				}
			})
		}
		if _, err := ge.g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: strings.Repeat("é", 64)}); err != nil {
			t.Errorf("a name of 64 characters: %v, want accepted", err)
		}
	})
}

// roleFixture is a group with a member of every kind, and the outsiders.
type roleFixture struct {
	group                                 *parleyv1.Group
	owner, admin, member, former, outside account
	target, newcomer                      account // a plain member to act on; a user to add
	code                                  string  // the owner's invite code
}

func (ge groupEnv) fixture(t testing.TB, users map[string]account) roleFixture {
	t.Helper()
	f := roleFixture{
		owner: users["owner"], admin: users["admin"], member: users["member"], former: users["former"],
		outside: users["outsider"], target: users["target"], newcomer: users["newcomer"],
	}
	f.group = ge.create(t, f.owner, "Fixture", f.admin, f.member, f.former, f.target)
	_, err := ge.g.SetMemberRole(f.owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: f.group.GetId(), UserId: f.admin.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
	ge.must(t, "SetMemberRole", err)
	_, err = ge.g.LeaveGroup(f.former.ctx(), &parleyv1.LeaveGroupRequest{GroupId: f.group.GetId()})
	ge.must(t, "LeaveGroup", err)
	inv, err := ge.g.CreateInviteLink(f.owner.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: f.group.GetId()})
	ge.must(t, "CreateInviteLink", err)
	f.code = inv.GetInviteLink().GetCode()
	return f
}

func (ge groupEnv) signUpAll(names ...string) map[string]account {
	out := make(map[string]account, len(names))
	for _, n := range names {
		out[n] = ge.signUp(n)
	}
	return out
}

var fixtureUsers = []string{"owner", "admin", "member", "former", "outsider", "target", "newcomer"}

// groupCall is one RPC of the role matrix, made by who on fixture f.
type groupCall struct {
	name string
	call func(ge groupEnv, f roleFixture, who account) (any, error)
}

func groupCalls() []groupCall {
	in := func(f roleFixture) string { return f.group.GetId() }
	hour := func() *timestamppb.Timestamp { return timestamppb.New(time.Now().Add(time.Hour)) }
	return []groupCall{
		{"GetGroup", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.GetGroup(who.ctx(), &parleyv1.GetGroupRequest{GroupId: in(f)})
		}},
		{"ListMembers", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.ListMembers(who.ctx(), &parleyv1.ListMembersRequest{GroupId: in(f)})
		}},
		{"ListInviteLinks", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.ListInviteLinks(who.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: in(f)})
		}},
		{"UpdateGroup", func(ge groupEnv, f roleFixture, who account) (any, error) {
			name := "Renamed"
			return ge.g.UpdateGroup(who.ctx(), &parleyv1.UpdateGroupRequest{GroupId: in(f), Name: &name})
		}},
		{"AddMembers", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.AddMembers(who.ctx(), &parleyv1.AddMembersRequest{GroupId: in(f), UserIds: ids(f.newcomer)})
		}},
		{"RemoveMembers", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.RemoveMembers(who.ctx(), &parleyv1.RemoveMembersRequest{GroupId: in(f), UserIds: ids(f.target)})
		}},
		{"LeaveGroup", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.LeaveGroup(who.ctx(), &parleyv1.LeaveGroupRequest{GroupId: in(f)})
		}},
		{"TransferOwnership", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.TransferOwnership(who.ctx(), &parleyv1.TransferOwnershipRequest{GroupId: in(f), UserId: f.target.user.GetId()})
		}},
		{"SetMemberRole", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.SetMemberRole(who.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: in(f), UserId: f.target.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
		}},
		{"MuteMember", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.MuteMember(who.ctx(), &parleyv1.MuteMemberRequest{GroupId: in(f), UserId: f.target.user.GetId(), MutedUntil: hour()})
		}},
		{"CreateInviteLink", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.CreateInviteLink(who.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: in(f), MaxUses: 5})
		}},
		{"RevokeInviteLink", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.RevokeInviteLink(who.ctx(), &parleyv1.RevokeInviteLinkRequest{GroupId: in(f), Code: f.code})
		}},
		{"JoinByInvite", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.JoinByInvite(who.ctx(), &parleyv1.JoinByInviteRequest{Code: f.code})
		}},
		{"DissolveGroup", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.g.DissolveGroup(who.ctx(), &parleyv1.DissolveGroupRequest{GroupId: in(f)})
		}},
		{"Send", func(ge groupEnv, f roleFixture, who account) (any, error) {
			return ge.m.Send(who.ctx(), rpcToConv(in(f), "hello group"))
		}},
	}
}

const (
	codeOK   = connect.Code(0)
	notFound = connect.CodeNotFound
	denied   = connect.CodePermissionDenied
)

func TestGroupRoleMatrix(t *testing.T) {
	t.Parallel()
	// want[rpc] is the code for owner, admin, member, former member, outsider.
	want := map[string][5]connect.Code{
		"GetGroup":          {codeOK, codeOK, codeOK, denied, notFound},
		"ListMembers":       {codeOK, codeOK, codeOK, denied, notFound},
		"ListInviteLinks":   {codeOK, codeOK, codeOK, denied, notFound},
		"UpdateGroup":       {codeOK, codeOK, denied, denied, notFound},
		"AddMembers":        {codeOK, codeOK, codeOK, denied, notFound},
		"RemoveMembers":     {codeOK, codeOK, denied, denied, notFound},
		"LeaveGroup":        {codeOK, codeOK, codeOK, denied, notFound},
		"TransferOwnership": {codeOK, denied, denied, denied, notFound},
		"SetMemberRole":     {codeOK, denied, denied, denied, notFound},
		"MuteMember":        {codeOK, codeOK, denied, denied, notFound},
		"CreateInviteLink":  {codeOK, codeOK, codeOK, denied, notFound},
		"RevokeInviteLink":  {codeOK, codeOK, denied, denied, notFound},
		// The code is the authority: whoever holds it joins, a former member
		// who left of their own accord too.
		"JoinByInvite":  {codeOK, codeOK, codeOK, codeOK, codeOK},
		"DissolveGroup": {codeOK, denied, denied, denied, notFound},
		"Send":          {codeOK, codeOK, codeOK, denied, notFound},
	}
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		ge := newGroupEnv(t, opts)
		users := ge.signUpAll(fixtureUsers...)
		for _, c := range groupCalls() {
			codes, ok := want[c.name]
			if !ok {
				t.Fatalf("no expectations for %s", c.name)
			}
			for i, role := range []string{"owner", "admin", "member", "former", "outsider"} {
				t.Run(fmt.Sprintf("%s by the %s", c.name, role), func(t *testing.T) {
					ge := groupEnv{env: ge.in(t), g: ge.g, m: ge.m}
					f := ge.fixture(t, users)
					messages := ge.count(chatMessages)
					res, err := c.call(ge, f, users[role])
					if codes[i] == 0 {
						if err != nil {
							t.Fatalf("got %v, want success", err)
						}
						return
					}
					wantCode(t, err, codes[i])
					if !isNil(res) {
						t.Errorf("got response %v with the error, want none", res)
					}
					if got := ge.count(chatMessages); got != messages {
						t.Errorf("a refused %s wrote %d entries", c.name, got-messages)
					}
				})
			}
		}
	})
}

// isNil reports whether a response returned as any is a nil pointer.
func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	return v == nil || rv.Kind() == reflect.Pointer && rv.IsNil()
}

func TestGroupChangesToADissolvedGroupAreRefused(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	users := ge.signUpAll(fixtureUsers...)
	f := ge.fixture(t, users)
	res, err := ge.g.DissolveGroup(f.owner.ctx(), &parleyv1.DissolveGroupRequest{GroupId: f.group.GetId()})
	ge.must(t, "DissolveGroup", err)
	if !res.GetGroup().GetDissolved() {
		t.Fatalf("group %v, want dissolved", res.GetGroup())
	}
	last := ge.lastSystem(t, f.member, f.group.GetId())
	if last.GetSystem().GetGroupDissolved() == nil || last.GetSenderId() != f.owner.user.GetId() {
		t.Fatalf("last entry %v, want GroupDissolved by the owner", last)
	}
	entries := ge.count(chatMessages)
	for _, c := range groupCalls() {
		t.Run(c.name+" by the owner", func(t *testing.T) {
			ge := groupEnv{env: ge.in(t), g: ge.g, m: ge.m}
			_, err := c.call(ge, f, f.owner)
			switch c.name {
			case "GetGroup", "ListMembers", "ListInviteLinks", "JoinByInvite", "DissolveGroup":
				// Reads stay open, joining a group one is in changes nothing,
				// and dissolving again changes nothing.
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
			default:
				wantCode(t, err, connect.CodeFailedPrecondition)
			}
		})
	}
	_, err = ge.g.JoinByInvite(f.outside.ctx(), &parleyv1.JoinByInviteRequest{Code: f.code})
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = ge.m.Send(f.member.ctx(), rpcToConv(f.group.GetId(), "anyone?"))
	wantCode(t, err, connect.CodeFailedPrecondition)
	if got := ge.count(chatMessages); got != entries {
		t.Errorf("%d entries written to a dissolved group", got-entries)
	}
	conv, err := ge.m.GetConversation(f.member.ctx(), &parleyv1.GetConversationRequest{ConversationId: f.group.GetId()})
	ge.must(t, "GetConversation", err)
	if conv.GetConversation().GetMembership() != parleyv1.MembershipState_MEMBERSHIP_STATE_DISSOLVED {
		t.Errorf("membership %v, want DISSOLVED", conv.GetConversation().GetMembership())
	}
	links, err := ge.g.ListInviteLinks(f.owner.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: f.group.GetId()})
	ge.must(t, "ListInviteLinks", err)
	if len(links.GetInviteLinks()) != 0 {
		t.Errorf("usable links after dissolving: %v, want none", links.GetInviteLinks())
	}
}

func TestGroupRecallAndTypingInADissolvedGroupAreRefused(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	alice, bob := ge.signUp("alice"), ge.signUp("bob")
	g := ge.create(t, alice, "G", bob)
	sent := rpcSend(t, ge.m, bob, rpcToConv(g.GetId(), "oops"))
	_, err := ge.m.SendTyping(bob.ctx(), &parleyv1.SendTypingRequest{ConversationId: g.GetId(), Typing: true})
	ge.must(t, "SendTyping before dissolving", err)
	_, err = ge.g.DissolveGroup(alice.ctx(), &parleyv1.DissolveGroupRequest{GroupId: g.GetId()})
	ge.must(t, "DissolveGroup", err)
	_, err = ge.m.Recall(bob.ctx(), &parleyv1.RecallRequest{ConversationId: g.GetId(), Seq: sent.GetSeq()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = ge.m.SendTyping(bob.ctx(), &parleyv1.SendTypingRequest{ConversationId: g.GetId(), Typing: false})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func TestGroupIDsOfOthersRevealNothing(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		ge := newGroupEnv(t, opts)
		users := ge.signUpAll(fixtureUsers...)
		f := ge.fixture(t, users)
		other := ge.create(t, f.outside, "Theirs", f.newcomer)
		otherCode, err := ge.g.CreateInviteLink(f.outside.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: other.GetId()})
		ge.must(t, "CreateInviteLink", err)
		direct := rpcSend(t, ge.m, f.owner, rpcToUser(f.member.user.GetId(), "hi")).GetConversationId()
		hour := timestamppb.New(time.Now().Add(time.Hour))
		g := f.group.GetId()
		name := "x"

		calls := []struct {
			name string
			call func() (any, error)
			want connect.Code
		}{
			{"GetGroup of an unknown id", func() (any, error) {
				return ge.g.GetGroup(f.owner.ctx(), &parleyv1.GetGroupRequest{GroupId: newUUID()})
			}, notFound},
			{"GetGroup of a direct conversation the caller is in", func() (any, error) {
				return ge.g.GetGroup(f.owner.ctx(), &parleyv1.GetGroupRequest{GroupId: direct})
			}, notFound},
			{"UpdateGroup of a direct conversation the caller is in", func() (any, error) {
				return ge.g.UpdateGroup(f.owner.ctx(), &parleyv1.UpdateGroupRequest{GroupId: direct, Name: &name})
			}, notFound},
			{"ListMembers of another group", func() (any, error) {
				return ge.g.ListMembers(f.owner.ctx(), &parleyv1.ListMembersRequest{GroupId: other.GetId()})
			}, notFound},
			{"ListInviteLinks of another group", func() (any, error) {
				return ge.g.ListInviteLinks(f.owner.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: other.GetId()})
			}, notFound},
			{"RevokeInviteLink of another group's code", func() (any, error) {
				return ge.g.RevokeInviteLink(f.owner.ctx(), &parleyv1.RevokeInviteLinkRequest{GroupId: g, Code: otherCode.GetInviteLink().GetCode()})
			}, notFound},
			{"RevokeInviteLink of an unknown code", func() (any, error) {
				return ge.g.RevokeInviteLink(f.owner.ctx(), &parleyv1.RevokeInviteLinkRequest{GroupId: g, Code: "AAAAAAAAAAAAAAAAAAAAAA"})
			}, notFound},
			{"RevokeInviteLink of another member's code by a member", func() (any, error) {
				return ge.g.RevokeInviteLink(f.member.ctx(), &parleyv1.RevokeInviteLinkRequest{GroupId: g, Code: f.code})
			}, denied},
			{"JoinByInvite with an unknown code", func() (any, error) {
				return ge.g.JoinByInvite(f.outside.ctx(), &parleyv1.JoinByInviteRequest{Code: "AAAAAAAAAAAAAAAAAAAAAA"})
			}, notFound},
			{"AddMembers of an unknown user", func() (any, error) {
				return ge.g.AddMembers(f.owner.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: []string{newUUID()}})
			}, notFound},
			{"TransferOwnership to an outsider", func() (any, error) {
				return ge.g.TransferOwnership(f.owner.ctx(), &parleyv1.TransferOwnershipRequest{GroupId: g, UserId: f.outside.user.GetId()})
			}, notFound},
			{"TransferOwnership to a former member", func() (any, error) {
				return ge.g.TransferOwnership(f.owner.ctx(), &parleyv1.TransferOwnershipRequest{GroupId: g, UserId: f.former.user.GetId()})
			}, notFound},
			{"SetMemberRole of an outsider", func() (any, error) {
				return ge.g.SetMemberRole(f.owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: f.outside.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			}, notFound},
			{"SetMemberRole of an unknown user", func() (any, error) {
				return ge.g.SetMemberRole(f.owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: newUUID(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			}, notFound},
			{"MuteMember of an outsider", func() (any, error) {
				return ge.g.MuteMember(f.owner.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: f.outside.user.GetId(), MutedUntil: hour})
			}, notFound},
			{"MuteMember of another group's member by a plain member", func() (any, error) {
				return ge.g.MuteMember(f.member.ctx(), &parleyv1.MuteMemberRequest{GroupId: other.GetId(), UserId: f.newcomer.user.GetId(), MutedUntil: hour})
			}, notFound},
			{"RemoveMembers of the owner by an admin", func() (any, error) {
				return ge.g.RemoveMembers(f.admin.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(f.owner)})
			}, denied},
			{"GetReadReceipts of a group message by a former member", func() (any, error) {
				return ge.m.GetReadReceipts(f.former.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: g, Seq: 1})
			}, denied},
			{"GetReadReceipts of another group's message", func() (any, error) {
				return ge.m.GetReadReceipts(f.owner.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: other.GetId(), Seq: 1})
			}, notFound},
		}
		for _, tt := range calls {
			t.Run(tt.name, func(t *testing.T) {
				e := ge.in(t)
				messages := e.count(chatMessages)
				res, err := tt.call()
				wantCode(t, err, tt.want)
				if !isNil(res) {
					t.Errorf("got response %v with the error, want none", res)
				}
				if got := e.count(chatMessages); got != messages {
					t.Errorf("a refused call wrote %d entries", got-messages)
				}
			})
		}
		for _, tt := range []struct {
			name string
			req  *parleyv1.JoinByInviteRequest
		}{
			{"a code too short", &parleyv1.JoinByInviteRequest{Code: "abc"}},
			{"a code with a slash", &parleyv1.JoinByInviteRequest{Code: "abcdefgh/ij"}},
		} {
			t.Run("JoinByInvite with "+tt.name+" is invalid", func(t *testing.T) {
				_, err := ge.g.JoinByInvite(f.outside.ctx(), tt.req)
				wantCode(t, err, connect.CodeInvalidArgument)
			})
		}
	})
}

func TestGroupRanks(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	users := ge.signUpAll("owner", "admin", "admin2", "member", "member2")
	owner, admin, admin2, member, member2 := users["owner"], users["admin"], users["admin2"], users["member"], users["member2"]
	fresh := func(t *testing.T) string {
		g := ge.create(t, owner, "Ranks", admin, admin2, member, member2)
		for _, a := range []account{admin, admin2} {
			_, err := ge.g.SetMemberRole(owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g.GetId(), UserId: a.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			ge.must(t, "SetMemberRole", err)
		}
		return g.GetId()
	}
	hour := timestamppb.New(time.Now().Add(time.Hour))
	tests := []struct {
		name string
		call func(g string) error
		want connect.Code
	}{
		{"the owner removes an admin", func(g string) error {
			_, err := ge.g.RemoveMembers(owner.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(admin)})
			return err
		}, codeOK},
		{"an admin removes a member", func(g string) error {
			_, err := ge.g.RemoveMembers(admin.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(member)})
			return err
		}, codeOK},
		{"an admin does not remove an admin", func(g string) error {
			_, err := ge.g.RemoveMembers(admin.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(member, admin2)})
			return err
		}, denied},
		{"an admin does not remove the owner", func(g string) error {
			_, err := ge.g.RemoveMembers(admin.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(owner)})
			return err
		}, denied},
		{"a member does not remove a member", func(g string) error {
			_, err := ge.g.RemoveMembers(member.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(member2)})
			return err
		}, denied},
		{"removing oneself is invalid", func(g string) error {
			_, err := ge.g.RemoveMembers(owner.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(owner)})
			return err
		}, connect.CodeInvalidArgument},
		{"the owner mutes an admin", func(g string) error {
			_, err := ge.g.MuteMember(owner.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: admin.user.GetId(), MutedUntil: hour})
			return err
		}, codeOK},
		{"an admin does not mute an admin", func(g string) error {
			_, err := ge.g.MuteMember(admin.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: admin2.user.GetId(), MutedUntil: hour})
			return err
		}, denied},
		{"an admin does not mute the owner", func(g string) error {
			_, err := ge.g.MuteMember(admin.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: owner.user.GetId(), MutedUntil: hour})
			return err
		}, denied},
		{"a mute in the past is invalid", func(g string) error {
			_, err := ge.g.MuteMember(owner.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: member.user.GetId(), MutedUntil: timestamppb.New(time.Now().Add(-time.Minute))})
			return err
		}, connect.CodeInvalidArgument},
		{"the owner's role is not set with SetMemberRole", func(g string) error {
			_, err := ge.g.SetMemberRole(owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: owner.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_MEMBER})
			return err
		}, connect.CodeFailedPrecondition},
		{"SetMemberRole does not make an owner", func(g string) error {
			_, err := ge.g.SetMemberRole(owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: member.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_OWNER})
			return err
		}, connect.CodeInvalidArgument},
		{"transferring to oneself is invalid", func(g string) error {
			_, err := ge.g.TransferOwnership(owner.ctx(), &parleyv1.TransferOwnershipRequest{GroupId: g, UserId: owner.user.GetId()})
			return err
		}, connect.CodeInvalidArgument},
		{"a member may not edit the group", func(g string) error {
			a := "notice"
			_, err := ge.g.UpdateGroup(member.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, Announcement: &a})
			return err
		}, denied},
		{"an announcement over 2000 characters is invalid", func(g string) error {
			a := strings.Repeat("a", 2001)
			_, err := ge.g.UpdateGroup(admin.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, Announcement: &a})
			return err
		}, connect.CodeInvalidArgument},
		{"a rename to a blank name is invalid", func(g string) error {
			n := " "
			_, err := ge.g.UpdateGroup(admin.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, Name: &n})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := fresh(t)
			err := tt.call(g)
			if tt.want == codeOK {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			wantCode(t, err, tt.want)
		})
	}

	t.Run("one owner, and at most 10 admins", func(t *testing.T) {
		g := fresh(t)
		more := make([]account, 0, 9)
		for i := range 9 {
			more = append(more, ge.befriendAll(t, ge.in(t).signUp(fmt.Sprintf("extra%d", i))))
		}
		_, err := ge.g.AddMembers(owner.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(more...)})
		ge.must(t, "AddMembers", err)
		for i, a := range more {
			_, err := ge.g.SetMemberRole(owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: a.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			if i < 8 {
				ge.must(t, "SetMemberRole", err)
			} else {
				wantCode(t, err, connect.CodeResourceExhausted)
			}
		}
		res, err := ge.g.TransferOwnership(owner.ctx(), &parleyv1.TransferOwnershipRequest{GroupId: g, UserId: member.user.GetId()})
		ge.must(t, "TransferOwnership", err)
		if res.GetGroup().GetOwnerId() != member.user.GetId() {
			t.Fatalf("owner %s, want the member", res.GetGroup().GetOwnerId())
		}
		if r := ge.get(t, owner, g).GetMembership().GetRole(); r != parleyv1.MemberRole_MEMBER_ROLE_ADMIN {
			t.Errorf("the previous owner's role %v, want ADMIN", r)
		}
		var owners int
		if err := ge.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM members WHERE conversation_id = $1 AND role = 1 AND left_seq IS NULL", g).Scan(&owners); err != nil || owners != 1 {
			t.Errorf("owners %d (%v), want exactly 1", owners, err)
		}
		_, err = ge.g.DissolveGroup(owner.ctx(), &parleyv1.DissolveGroupRequest{GroupId: g})
		wantCode(t, err, denied)
	})
}

func TestGroupSystemEntriesRecordEveryChange(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	alice, bob, carol, dave := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol"), ge.signUp("dave")
	g := ge.create(t, alice, "Club", bob).GetId()
	until := timestamppb.New(time.Now().Add(time.Hour).Truncate(time.Microsecond))
	name, ann, yes := "Club 2", "Meet at 8", true
	sys := func(c *parleyv1.SystemContent) *parleyv1.SystemContent { return c }

	steps := []struct {
		name string
		by   account
		do   func() error
		want []*parleyv1.SystemContent
	}{
		{"AddMembers", alice, func() error {
			_, err := ge.g.AddMembers(alice.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(carol, dave, bob)})
			return err
		}, []*parleyv1.SystemContent{sys(&parleyv1.SystemContent{Event: &parleyv1.SystemContent_MembersAdded{MembersAdded: &parleyv1.MembersAdded{UserIds: ids(carol, dave)}}})}},
		{"UpdateGroup", alice, func() error {
			_, err := ge.g.UpdateGroup(alice.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, Name: &name, Announcement: &ann, MuteAll: &yes})
			return err
		}, []*parleyv1.SystemContent{
			{Event: &parleyv1.SystemContent_GroupRenamed{GroupRenamed: &parleyv1.GroupRenamed{Name: name}}},
			{Event: &parleyv1.SystemContent_AnnouncementChanged{AnnouncementChanged: &parleyv1.AnnouncementChanged{Announcement: ann}}},
			{Event: &parleyv1.SystemContent_GroupSettingsChanged{GroupSettingsChanged: &parleyv1.GroupSettingsChanged{MuteAll: &yes}}},
		}},
		{"UpdateGroup that changes nothing", alice, func() error {
			_, err := ge.g.UpdateGroup(alice.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, Name: &name})
			return err
		}, nil},
		{"SetMemberRole", alice, func() error {
			_, err := ge.g.SetMemberRole(alice.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: bob.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			return err
		}, []*parleyv1.SystemContent{{Event: &parleyv1.SystemContent_MemberRoleChanged{MemberRoleChanged: &parleyv1.MemberRoleChanged{UserId: bob.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN}}}}},
		{"MuteMember", bob, func() error {
			_, err := ge.g.MuteMember(bob.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: carol.user.GetId(), MutedUntil: until})
			return err
		}, []*parleyv1.SystemContent{{Event: &parleyv1.SystemContent_MemberMuted{MemberMuted: &parleyv1.MemberMuted{UserId: carol.user.GetId(), MutedUntil: until}}}}},
		{"RemoveMembers", bob, func() error {
			_, err := ge.g.RemoveMembers(bob.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: []string{dave.user.GetId(), newUUID()}})
			return err
		}, []*parleyv1.SystemContent{{Event: &parleyv1.SystemContent_MembersRemoved{MembersRemoved: &parleyv1.MembersRemoved{UserIds: ids(dave)}}}}},
		{"TransferOwnership", alice, func() error {
			_, err := ge.g.TransferOwnership(alice.ctx(), &parleyv1.TransferOwnershipRequest{GroupId: g, UserId: carol.user.GetId()})
			return err
		}, []*parleyv1.SystemContent{{Event: &parleyv1.SystemContent_OwnershipTransferred{OwnershipTransferred: &parleyv1.OwnershipTransferred{FromUserId: alice.user.GetId(), ToUserId: carol.user.GetId()}}}}},
		{"LeaveGroup", alice, func() error {
			_, err := ge.g.LeaveGroup(alice.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g})
			return err
		}, []*parleyv1.SystemContent{{Event: &parleyv1.SystemContent_MemberLeft{MemberLeft: &parleyv1.MemberLeft{UserId: alice.user.GetId()}}}}},
	}
	seen := 0 // carol joins with the first step
	for _, st := range steps {
		ge.must(t, st.name, st.do())
		log := ge.log(t, carol, g)
		var got []*parleyv1.SystemContent
		for _, m := range log[seen:] {
			got = append(got, m.GetSystem())
			if m.GetSenderId() != st.by.user.GetId() {
				t.Errorf("%s: entry %d sent by %s, want %s", st.name, m.GetSeq(), m.GetSenderId(), st.by.user.GetUsername())
			}
		}
		seen = len(log)
		if diff := cmp.Diff(st.want, got, protocmp.Transform()); diff != "" {
			t.Errorf("%s: entries (-want +got):\n%s", st.name, diff)
		}
	}
	got := ge.get(t, carol, g).GetGroup()
	if got.GetName() != name || got.GetAnnouncement() != ann || !got.GetSettings().GetMuteAll() || got.GetOwnerId() != carol.user.GetId() || got.GetMemberCount() != 2 {
		t.Errorf("group %v: want %q, %q, mute_all, owned by carol, 2 members", got, name, ann)
	}
	members, err := ge.g.ListMembers(carol.ctx(), &parleyv1.ListMembersRequest{GroupId: g})
	ge.must(t, "ListMembers", err)
	if m := members.GetMembers(); len(m) != 2 || m[0].GetUserId() != carol.user.GetId() || m[1].GetUserId() != bob.user.GetId() {
		t.Errorf("members %v, want carol (owner), bob (admin)", m)
	}
}

func TestGroupOwnerLeavingPassesTheGroupOn(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	users := ge.signUpAll("owner", "mem1", "adm1", "adm2")
	owner, m1, a1, a2 := users["owner"], users["mem1"], users["adm1"], users["adm2"]

	t.Run("to the longest-standing admin", func(t *testing.T) {
		g := ge.create(t, owner, "G", m1, a1).GetId()
		_, err := ge.g.AddMembers(owner.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(a2)})
		ge.must(t, "AddMembers", err)
		for _, a := range []account{a2, a1} { // promoted in the other order: seniority is join time
			_, err := ge.g.SetMemberRole(owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: a.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
			ge.must(t, "SetMemberRole", err)
		}
		_, err = ge.g.LeaveGroup(owner.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g})
		ge.must(t, "LeaveGroup", err)
		if got := ge.get(t, m1, g).GetGroup(); got.GetOwnerId() != a1.user.GetId() || got.GetMemberCount() != 3 {
			t.Fatalf("group %v, want owned by a1 with 3 members", got)
		}
		log := ge.log(t, m1, g)
		if len(log) < 2 {
			t.Fatalf("log %v", log)
		}
		want := []*parleyv1.SystemContent{
			{Event: &parleyv1.SystemContent_OwnershipTransferred{OwnershipTransferred: &parleyv1.OwnershipTransferred{FromUserId: owner.user.GetId(), ToUserId: a1.user.GetId()}}},
			{Event: &parleyv1.SystemContent_MemberLeft{MemberLeft: &parleyv1.MemberLeft{UserId: owner.user.GetId()}}},
		}
		if diff := cmp.Diff(want, []*parleyv1.SystemContent{log[len(log)-2].GetSystem(), log[len(log)-1].GetSystem()}, protocmp.Transform()); diff != "" {
			t.Errorf("last entries (-want +got):\n%s", diff)
		}
		// The former owner sees their departure, and nothing after.
		if last := ge.lastSystem(t, owner, g); last.GetSystem().GetMemberLeft() == nil {
			t.Errorf("former owner's last entry %v, want their MemberLeft", last)
		}
	})
	t.Run("else to the longest-standing member", func(t *testing.T) {
		g := ge.create(t, owner, "G", m1).GetId()
		_, err := ge.g.AddMembers(owner.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(a1)})
		ge.must(t, "AddMembers", err)
		_, err = ge.g.LeaveGroup(owner.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g})
		ge.must(t, "LeaveGroup", err)
		if got := ge.get(t, a1, g).GetGroup(); got.GetOwnerId() != m1.user.GetId() {
			t.Fatalf("owner %s, want m1, who joined first", got.GetOwnerId())
		}
	})
	t.Run("and the last member leaving ends it", func(t *testing.T) {
		g := ge.create(t, owner, "G", m1).GetId()
		inv, err := ge.g.CreateInviteLink(owner.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: g})
		ge.must(t, "CreateInviteLink", err)
		for _, who := range []account{owner, m1} {
			_, err := ge.g.LeaveGroup(who.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g})
			ge.must(t, "LeaveGroup", err)
		}
		list, err := ge.g.ListGroups(m1.ctx(), &parleyv1.ListGroupsRequest{})
		ge.must(t, "ListGroups", err)
		if slices.ContainsFunc(list.GetGroups(), func(x *parleyv1.Group) bool { return x.GetId() == g }) {
			t.Errorf("the group is still listed after everyone left")
		}
		_, err = ge.g.JoinByInvite(a2.ctx(), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()})
		wantCode(t, err, connect.CodeFailedPrecondition)
		_, err = ge.g.JoinByInvite(owner.ctx(), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()})
		wantCode(t, err, connect.CodeFailedPrecondition)
	})
}

func TestGroupMemberLimitHoldsUnderConcurrentAdds(t *testing.T) {
	t.Parallel()
	const limit = 8
	ge := newGroupEnv(t, nil, func(c *server.Config) { c.MaxGroupMembers = limit })
	owner := ge.signUp("owner")
	var users []account
	for i := range 20 {
		users = append(users, ge.signUp(fmt.Sprintf("user%d", i)))
	}
	g := ge.create(t, owner, "Full", users[0], users[1]).GetId()
	inv, err := ge.g.CreateInviteLink(owner.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: g})
	ge.must(t, "CreateInviteLink", err)

	var wg sync.WaitGroup
	codes := make([]connect.Code, len(users))
	for i := 2; i < len(users); i++ {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = ge.g.AddMembers(owner.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(users[i])})
			} else {
				_, err = ge.g.JoinByInvite(users[i].ctx(), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()})
			}
			if err != nil {
				codes[i] = connect.CodeOf(err)
			}
		})
	}
	wg.Wait()
	joined := 0
	for i := 2; i < len(users); i++ {
		switch codes[i] {
		case 0:
			joined++
		case connect.CodeResourceExhausted:
		default:
			t.Errorf("user %d got %v, want success or ResourceExhausted", i, codes[i])
		}
	}
	if joined != limit-3 {
		t.Errorf("%d joined, want %d (the limit of %d less the owner and 2 members)", joined, limit-3, limit)
	}
	if n := ge.get(t, owner, g).GetGroup().GetMemberCount(); n != limit {
		t.Errorf("member_count %d, want %d", n, limit)
	}
	_, err = ge.g.CreateGroup(owner.ctx(), &parleyv1.CreateGroupRequest{Name: "Too big", MemberIds: ids(users[:limit]...)})
	wantCode(t, err, connect.CodeResourceExhausted)
}

func TestGroupInviteLinks(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		ge := newGroupEnv(t, opts)
		owner, member := ge.signUp("owner"), ge.signUp("member")
		var joiners []account
		for i := range 10 {
			joiners = append(joiners, ge.signUp(fmt.Sprintf("joiner%d", i)))
		}
		g := ge.create(t, owner, "Open", member).GetId()
		create := func(t *testing.T, who account, req *parleyv1.CreateInviteLinkRequest) *parleyv1.InviteLink {
			t.Helper()
			req.GroupId = g
			res, err := ge.g.CreateInviteLink(who.ctx(), req)
			ge.must(t, "CreateInviteLink", err)
			return res.GetInviteLink()
		}
		join := func(who account, code string) (*parleyv1.JoinByInviteResponse, error) {
			return ge.g.JoinByInvite(who.ctx(), &parleyv1.JoinByInviteRequest{Code: code})
		}

		t.Run("a code lets its holder join, once", func(t *testing.T) {
			inv := create(t, member, &parleyv1.CreateInviteLinkRequest{})
			if inv.GetGroupId() != g || inv.GetCreatorId() != member.user.GetId() || len(inv.GetCode()) < 16 || inv.GetRevoked() {
				t.Fatalf("invite %v", inv)
			}
			res, err := join(joiners[0], inv.GetCode())
			ge.must(t, "JoinByInvite", err)
			if res.GetGroup().GetId() != g || res.GetConversation().GetId() != g || res.GetConversation().GetJoinedSeq() != res.GetConversation().GetLastSeq() {
				t.Errorf("joined %v / %v: want the group, its conversation starting at the join entry", res.GetGroup(), res.GetConversation())
			}
			last := ge.lastSystem(t, joiners[0], g)
			want := &parleyv1.MemberJoined{UserId: joiners[0].user.GetId(), InviterId: member.user.GetId()}
			if diff := cmp.Diff(want, last.GetSystem().GetMemberJoined(), protocmp.Transform()); diff != "" || last.GetSenderId() != joiners[0].user.GetId() {
				t.Errorf("join entry by %s (-want +got):\n%s", last.GetSenderId(), diff)
			}
			if log := ge.log(t, joiners[0], g); len(log) != 1 {
				t.Errorf("the newcomer sees %d entries, want only their join", len(log))
			}
			again, err := join(joiners[0], inv.GetCode())
			ge.must(t, "JoinByInvite again", err)
			if again.GetConversation().GetLastSeq() != res.GetConversation().GetLastSeq() {
				t.Errorf("joining again wrote an entry")
			}
			links, err := ge.g.ListInviteLinks(member.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: g})
			ge.must(t, "ListInviteLinks", err)
			if len(links.GetInviteLinks()) != 1 || links.GetInviteLinks()[0].GetUseCount() != 1 {
				t.Errorf("links %v, want the one code used once", links.GetInviteLinks())
			}
		})
		t.Run("a code runs out of uses, also concurrently", func(t *testing.T) {
			inv := create(t, owner, &parleyv1.CreateInviteLinkRequest{MaxUses: 3})
			var wg sync.WaitGroup
			codes := make([]connect.Code, 6)
			for i := range codes {
				wg.Go(func() {
					if _, err := join(joiners[1+i], inv.GetCode()); err != nil {
						codes[i] = connect.CodeOf(err)
					}
				})
			}
			wg.Wait()
			okN := 0
			for _, c := range codes {
				switch c {
				case 0:
					okN++
				case connect.CodeFailedPrecondition:
				default:
					t.Errorf("got %v, want success or FailedPrecondition", c)
				}
			}
			if okN != 3 {
				t.Errorf("%d joined with a code of 3 uses", okN)
			}
		})
		t.Run("a code expires", func(t *testing.T) {
			inv := create(t, owner, &parleyv1.CreateInviteLinkRequest{ExpireTime: timestamppb.New(time.Now().Add(time.Second))})
			time.Sleep(1100 * time.Millisecond)
			_, err := join(joiners[7], inv.GetCode())
			wantCode(t, err, connect.CodeFailedPrecondition)
		})
		t.Run("a revoked code is refused", func(t *testing.T) {
			inv := create(t, member, &parleyv1.CreateInviteLinkRequest{})
			res, err := ge.g.RevokeInviteLink(member.ctx(), &parleyv1.RevokeInviteLinkRequest{GroupId: g, Code: inv.GetCode()})
			ge.must(t, "RevokeInviteLink", err)
			if !res.GetInviteLink().GetRevoked() {
				t.Errorf("revoked link %v", res.GetInviteLink())
			}
			_, err = join(joiners[8], inv.GetCode())
			wantCode(t, err, connect.CodeFailedPrecondition)
		})
		t.Run("members see their own codes, admins every code", func(t *testing.T) {
			mine, err := ge.g.ListInviteLinks(member.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: g, IncludeUnusable: true})
			ge.must(t, "ListInviteLinks", err)
			for _, l := range mine.GetInviteLinks() {
				if l.GetCreatorId() != member.user.GetId() {
					t.Errorf("a member sees %v, someone else's code", l)
				}
			}
			all, err := ge.g.ListInviteLinks(owner.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: g, IncludeUnusable: true})
			ge.must(t, "ListInviteLinks", err)
			if len(all.GetInviteLinks()) != 4 || len(mine.GetInviteLinks()) != 2 {
				t.Errorf("owner sees %d codes, member %d; want 4 and 2", len(all.GetInviteLinks()), len(mine.GetInviteLinks()))
			}
			usable, err := ge.g.ListInviteLinks(owner.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: g})
			ge.must(t, "ListInviteLinks", err)
			if len(usable.GetInviteLinks()) != 1 {
				t.Errorf("usable codes %v, want the one unlimited code", usable.GetInviteLinks())
			}
		})
		t.Run("restricting invites to admins stops members and their codes", func(t *testing.T) {
			inv := create(t, member, &parleyv1.CreateInviteLinkRequest{})
			yes := true
			_, err := ge.g.UpdateGroup(owner.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, InvitesRestrictedToAdmins: &yes})
			ge.must(t, "UpdateGroup", err)
			_, err = ge.g.CreateInviteLink(member.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: g})
			wantCode(t, err, connect.CodePermissionDenied)
			_, err = ge.g.AddMembers(member.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(joiners[9])})
			wantCode(t, err, connect.CodePermissionDenied)
			_, err = join(joiners[9], inv.GetCode())
			wantCode(t, err, connect.CodeFailedPrecondition)
		})
		t.Run("a group has at most 20 usable codes", func(t *testing.T) {
			links, err := ge.g.ListInviteLinks(owner.ctx(), &parleyv1.ListInviteLinksRequest{GroupId: g})
			ge.must(t, "ListInviteLinks", err)
			for range 20 - len(links.GetInviteLinks()) {
				create(t, owner, &parleyv1.CreateInviteLinkRequest{})
			}
			_, err = ge.g.CreateInviteLink(owner.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: g})
			wantCode(t, err, connect.CodeResourceExhausted)
		})
	})
}

func TestGroupMutes(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	owner, admin, member := ge.signUp("owner"), ge.signUp("admin"), ge.signUp("member")
	g := ge.create(t, owner, "Quiet", admin, member).GetId()
	_, err := ge.g.SetMemberRole(owner.ctx(), &parleyv1.SetMemberRoleRequest{GroupId: g, UserId: admin.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN})
	ge.must(t, "SetMemberRole", err)
	send := func(who account) error {
		_, err := ge.m.Send(who.ctx(), rpcToConv(g, "hi"))
		return err
	}

	res, err := ge.g.MuteMember(admin.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: member.user.GetId(), MutedUntil: timestamppb.New(time.Now().Add(1500 * time.Millisecond))})
	ge.must(t, "MuteMember", err)
	if res.GetMember().GetMutedUntil() == nil {
		t.Fatalf("member %v, want muted_until", res.GetMember())
	}
	wantCode(t, send(member), connect.CodePermissionDenied)
	ge.must(t, "admin sends", send(admin))
	time.Sleep(1600 * time.Millisecond)
	ge.must(t, "member sends once the mute ended", send(member))

	_, err = ge.g.MuteMember(owner.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: member.user.GetId(), MutedUntil: timestamppb.New(time.Now().Add(time.Hour))})
	ge.must(t, "MuteMember", err)
	wantCode(t, send(member), connect.CodePermissionDenied)
	if m := ge.get(t, member, g).GetMembership(); m.GetMutedUntil() == nil {
		t.Errorf("membership %v, want muted_until", m)
	}
	inv, err := ge.g.CreateInviteLink(owner.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: g})
	ge.must(t, "CreateInviteLink", err)
	_, err = ge.g.LeaveGroup(member.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g})
	ge.must(t, "LeaveGroup", err)
	_, err = ge.g.JoinByInvite(member.ctx(), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()})
	ge.must(t, "JoinByInvite", err)
	wantCode(t, send(member), connect.CodePermissionDenied) // leaving and rejoining does not lift a mute
	_, err = ge.g.MuteMember(owner.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: member.user.GetId()})
	ge.must(t, "unmute", err)
	ge.must(t, "member sends once unmuted", send(member))
	entries := ge.count(chatMessages)
	_, err = ge.g.MuteMember(owner.ctx(), &parleyv1.MuteMemberRequest{GroupId: g, UserId: member.user.GetId()})
	ge.must(t, "unmute again", err)
	if got := ge.count(chatMessages); got != entries {
		t.Errorf("unmuting a member who is not muted wrote %d entries", got-entries)
	}

	yes, no := true, false
	_, err = ge.g.UpdateGroup(admin.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, MuteAll: &yes})
	ge.must(t, "mute all", err)
	wantCode(t, send(member), connect.CodePermissionDenied)
	ge.must(t, "admin sends under mute_all", send(admin))
	ge.must(t, "owner sends under mute_all", send(owner))
	_, err = ge.g.UpdateGroup(admin.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, MuteAll: &no})
	ge.must(t, "unmute all", err)
	ge.must(t, "member sends after mute_all", send(member))
}

func TestGroupMentionsAndReadReceipts(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	alice, bob, carol, dave, erin := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol"), ge.signUp("dave"), ge.signUp("erin")
	g := ge.create(t, alice, "Readers", bob, carol, dave).GetId()
	_, err := ge.g.LeaveGroup(dave.ctx(), &parleyv1.LeaveGroupRequest{GroupId: g})
	ge.must(t, "LeaveGroup", err)

	mention := func(users ...account) *parleyv1.SendRequest {
		r := rpcToConv(g, "@you")
		r.MentionUserIds = ids(users...)
		return r
	}
	sent := rpcSend(t, ge.m, alice, mention(bob, carol))
	if diff := cmp.Diff(ids(bob, carol), sent.GetMessage().GetMentionUserIds()); diff != "" {
		t.Errorf("mentions (-want +got):\n%s", diff)
	}
	if got := ge.lastSystem(t, bob, g); !slices.Equal(got.GetMentionUserIds(), ids(bob, carol)) {
		t.Errorf("bob reads mentions %v", got.GetMentionUserIds())
	}
	for name, req := range map[string]*parleyv1.SendRequest{"a former member": mention(dave), "an outsider": mention(erin)} {
		_, err := ge.m.Send(alice.ctx(), req)
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("mentioning %s: %v, want InvalidArgument", name, err)
		}
	}

	receipts := func() *parleyv1.GetReadReceiptsResponse {
		t.Helper()
		res, err := ge.m.GetReadReceipts(alice.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: g, Seq: sent.GetSeq()})
		ge.must(t, "GetReadReceipts", err)
		return res
	}
	if diff := cmp.Diff(&parleyv1.GetReadReceiptsResponse{UnreadMemberCount: 2}, receipts(), protocmp.Transform()); diff != "" {
		t.Errorf("receipts before reading (-want +got):\n%s", diff)
	}
	_, err = ge.m.MarkRead(bob.ctx(), &parleyv1.MarkReadRequest{ConversationId: g, Seq: sent.GetSeq()})
	ge.must(t, "MarkRead", err)
	if diff := cmp.Diff(&parleyv1.GetReadReceiptsResponse{ReaderIds: ids(bob), UnreadMemberCount: 1}, receipts(), protocmp.Transform()); diff != "" {
		t.Errorf("receipts after bob read (-want +got):\n%s", diff)
	}
	_, err = ge.m.GetReadReceipts(bob.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: g, Seq: sent.GetSeq()})
	wantCode(t, err, connect.CodePermissionDenied) // only the sender
	_, err = ge.m.MarkRead(carol.ctx(), &parleyv1.MarkReadRequest{ConversationId: g, Seq: 1})
	ge.must(t, "MarkRead", err)
	conv, err := ge.m.GetConversation(alice.ctx(), &parleyv1.GetConversationRequest{ConversationId: g})
	ge.must(t, "GetConversation", err)
	if c := conv.GetConversation(); c.GetPeerReadSeq() != 1 || c.GetMemberCount() != 3 {
		t.Errorf("peer_read_seq %d, member_count %d; want carol's 1 (the lowest), 3", c.GetPeerReadSeq(), c.GetMemberCount())
	}
}

// streamEvents reads stream until it has seen n heartbeats and returns the
// events before, without those of a's account conversation.
func streamEvents(t testing.TB, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse], a account, heartbeats int) []*parleyv1.SubscribeResponse {
	t.Helper()
	var out []*parleyv1.SubscribeResponse
	for heartbeats > 0 {
		ev := rpcReceive(t, stream)
		switch {
		case ev.GetHeartbeat() != nil:
			heartbeats--
		case ev.GetPresence() != nil, a.aboutAccount(ev):
		default:
			out = append(out, ev)
		}
	}
	return out
}

// untilEvent reads stream until an event matches and returns the events
// before it and the match, without heartbeats and presence.
func untilEvent(t testing.TB, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse], match func(*parleyv1.SubscribeResponse) bool) []*parleyv1.SubscribeResponse {
	t.Helper()
	var out []*parleyv1.SubscribeResponse
	for {
		ev := rpcReceive(t, stream)
		if ev.GetHeartbeat() != nil || ev.GetPresence() != nil {
			continue
		}
		out = append(out, ev)
		if match(ev) {
			return out
		}
	}
}

func addedConversation(convID string) func(*parleyv1.SubscribeResponse) bool {
	return func(ev *parleyv1.SubscribeResponse) bool {
		return ev.GetConversation().GetAdded().GetConversation().GetId() == convID
	}
}

// untilMessage reads stream until a message of convID at seq arrives, and
// returns the events before it and the message.
func untilMessage(t testing.TB, stream *connect.ServerStreamForClient[parleyv1.SubscribeResponse], convID string, seq int64) []*parleyv1.SubscribeResponse {
	t.Helper()
	var out []*parleyv1.SubscribeResponse
	for {
		ev := rpcReceive(t, stream)
		if ev.GetHeartbeat() != nil || ev.GetPresence() != nil {
			continue
		}
		out = append(out, ev)
		if m := ev.GetMessage(); m.GetConversationId() == convID && m.GetSeq() >= seq {
			return out
		}
	}
}

func TestGroupHistoryIsBoundedByMembership(t *testing.T) {
	t.Parallel()
	forEachProtocol(t, func(t *testing.T, opts []connect.ClientOption) {
		t.Parallel()
		ge := newGroupEnv(t, opts, func(c *server.Config) { c.HeartbeatInterval = 150 * time.Millisecond })
		alice, bob, carol := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol")
		g := ge.create(t, alice, "Bounded", carol).GetId()
		rpcSend(t, ge.m, alice, rpcToConv(g, "before bob")) // seq 2

		bobs, _ := rpcSubscribe(t, ge.m, bob)
		added, err := ge.g.AddMembers(alice.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(bob)})
		ge.must(t, "AddMembers", err)
		if diff := cmp.Diff(ids(bob), added.GetAddedUserIds()); diff != "" {
			t.Fatalf("added (-want +got):\n%s", diff)
		}
		const joined = 3
		evs := untilEvent(t, bobs, addedConversation(g))
		if len(evs) != 1 {
			t.Errorf("bob's stream after being added: %v, want the conversation added first", evs)
		}
		add := evs[len(evs)-1].GetConversation().GetAdded()
		if c := add.GetConversation(); c.GetId() != g || c.GetJoinedSeq() != joined || c.GetTitle() != "Bounded" || c.GetUnreadCount() != 1 {
			t.Errorf("added conversation %v, want the group from seq %d, 1 unread", c, joined)
		}
		if diff := cmp.Diff([]int64{joined}, rpcSeqs(add.GetLatestMessages())); diff != "" {
			t.Errorf("a new member's latest messages (-want +got):\n%s", diff)
		}
		if got := rpcSeqs(ge.log(t, bob, g)); !slices.Equal(got, []int64{joined}) {
			t.Errorf("a new member lists seqs %v, want only from the join", got)
		}
		_, err = ge.m.GetReadReceipts(bob.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: g, Seq: 2})
		wantCode(t, err, connect.CodeNotFound)

		live := rpcSend(t, ge.m, carol, rpcToConv(g, "hi bob")) // seq 4
		if evs := untilMessage(t, bobs, g, live.GetSeq()); evs[len(evs)-1].GetMessage().GetSeq() != 4 {
			t.Fatalf("bob's stream: %v", evs)
		}

		removed, err := ge.g.RemoveMembers(alice.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(bob)})
		ge.must(t, "RemoveMembers", err)
		if removed.GetGroup().GetMemberCount() != 2 {
			t.Errorf("member_count %d after removing bob, want 2", removed.GetGroup().GetMemberCount())
		}
		const left = 5
		evs = untilMessage(t, bobs, g, left)
		if sys := evs[len(evs)-1].GetMessage().GetSystem().GetMembersRemoved(); !slices.Equal(sys.GetUserIds(), ids(bob)) {
			t.Errorf("bob's stream got %v, want his removal", evs)
		}
		name := "Renamed after bob"
		_, err = ge.g.UpdateGroup(alice.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g, Name: &name})
		ge.must(t, "UpdateGroup", err)
		after := rpcSend(t, ge.m, carol, rpcToConv(g, "bob is gone"))
		_, err = ge.m.MarkRead(carol.ctx(), &parleyv1.MarkReadRequest{ConversationId: g, Seq: after.GetSeq()})
		ge.must(t, "MarkRead", err)
		_, err = ge.m.SendTyping(carol.ctx(), &parleyv1.SendTypingRequest{ConversationId: g, Typing: true})
		ge.must(t, "SendTyping", err)
		var sawRemovedView bool
		for _, ev := range streamEvents(t, bobs, bob, 3) {
			if u := ev.GetConversation().GetUpdated(); u.GetId() == g {
				if u.GetMembership() != parleyv1.MembershipState_MEMBERSHIP_STATE_REMOVED || u.GetLastSeq() != left || u.GetTitle() != "Bounded" {
					t.Errorf("bob's updated view %v, want REMOVED at seq %d, titled as when he left", u, left)
				}
				sawRemovedView = true
				continue
			}
			if m := ev.GetMessage(); m.GetConversationId() == g && m.GetSeq() > left {
				t.Errorf("bob's stream carried seq %d after his removal at %d", m.GetSeq(), left)
			}
			if ev.GetTyping().GetConversationId() == g || ev.GetRead().GetConversationId() == g {
				t.Errorf("bob's stream carried %v after his removal", ev)
			}
		}
		if !sawRemovedView {
			t.Errorf("bob's stream got no updated view of the group after his removal")
		}

		if got := rpcSeqs(ge.log(t, bob, g)); !slices.Equal(got, []int64{joined, 4, left}) {
			t.Errorf("ListMessages: former member sees %v, want %v", got, []int64{joined, 4, left})
		}
		sync, err := ge.m.Sync(bob.ctx(), &parleyv1.SyncRequest{Cursors: []*parleyv1.Cursor{{ConversationId: g, Seq: joined}}})
		ge.must(t, "Sync", err)
		sync = bob.chatSync(sync)
		if got := rpcSeqs(sync.GetMessages()); !slices.Equal(got, []int64{4, left}) {
			t.Errorf("Sync: former member gets %v, want 4, %d", got, left)
		}
		list, err := ge.m.ListConversations(bob.ctx(), &parleyv1.ListConversationsRequest{})
		ge.must(t, "ListConversations", err)
		for _, c := range bob.chatOnly(list.GetConversations()) {
			if c.GetId() == g && (c.GetLastSeq() != left || c.GetLastMessage().GetSeq() != left || c.GetTitle() != "Bounded" ||
				c.GetMemberCount() != 0 || c.GetPeerReadSeq() != 0 || c.GetMembership() != parleyv1.MembershipState_MEMBERSHIP_STATE_REMOVED) {
				t.Errorf("former member's listed conversation %v, want it frozen at seq %d", c, left)
			}
		}
		_, err = ge.m.Send(bob.ctx(), rpcToConv(g, "let me back"))
		wantCode(t, err, connect.CodePermissionDenied)
		_, err = ge.m.GetReadReceipts(bob.ctx(), &parleyv1.GetReadReceiptsRequest{ConversationId: g, Seq: 4})
		wantCode(t, err, connect.CodePermissionDenied)
		inv, err := ge.g.CreateInviteLink(carol.ctx(), &parleyv1.CreateInviteLinkRequest{GroupId: g})
		ge.must(t, "CreateInviteLink", err)
		_, err = ge.g.JoinByInvite(bob.ctx(), &parleyv1.JoinByInviteRequest{Code: inv.GetInviteLink().GetCode()})
		wantCode(t, err, connect.CodePermissionDenied) // removed by an admin: a member must add him back

		// A fresh stream of the former member ends at the removal too.
		fresh, backlog := rpcSubscribe(t, ge.m, bob)
		for _, ev := range backlog {
			if c := ev.GetConversation().GetAdded().GetConversation(); c.GetId() == g && c.GetLastSeq() != left {
				t.Errorf("a new stream of the former member shows the group at seq %d, want %d", c.GetLastSeq(), left)
			}
		}

		readd, err := ge.g.AddMembers(carol.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(bob)})
		ge.must(t, "AddMembers again", err)
		rejoined := after.GetSeq() + 1
		if readd.GetGroup().GetMemberCount() != 3 {
			t.Errorf("member_count %d after re-adding, want 3", readd.GetGroup().GetMemberCount())
		}
		for _, stream := range []*connect.ServerStreamForClient[parleyv1.SubscribeResponse]{bobs, fresh} {
			evs := untilEvent(t, stream, addedConversation(g))
			for _, ev := range evs[:len(evs)-1] {
				if ev.GetMessage().GetConversationId() == g {
					t.Errorf("a stream got %v before the rejoined conversation", ev)
				}
			}
			readded := evs[len(evs)-1].GetConversation().GetAdded()
			if c := readded.GetConversation(); c.GetJoinedSeq() != rejoined || c.GetMembership() != parleyv1.MembershipState_MEMBERSHIP_STATE_ACTIVE || c.GetTitle() != name {
				t.Errorf("rejoined conversation %v, want active from seq %d, titled %q", c, rejoined, name)
			}
			if diff := cmp.Diff([]int64{rejoined}, rpcSeqs(readded.GetLatestMessages())); diff != "" {
				t.Errorf("rejoined latest messages (-want +got):\n%s", diff)
			}
		}
		if got := rpcSeqs(ge.log(t, bob, g)); !slices.Equal(got, []int64{rejoined}) {
			t.Errorf("after rejoining bob lists %v, want only from seq %d", got, rejoined)
		}
		next := rpcSend(t, ge.m, carol, rpcToConv(g, "welcome back"))
		if evs := untilMessage(t, bobs, g, next.GetSeq()); evs[len(evs)-1].GetMessage().GetSeq() != next.GetSeq() {
			t.Errorf("bob's stream after rejoining: %v", evs)
		}
	})
}

func TestGroupCreationIsThrottledPerUser(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	alice, bob := ge.signUp("alice"), ge.signUp("bob")
	for i := range 100 {
		_, err := ge.g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: fmt.Sprintf("g%d", i)})
		ge.must(t, "CreateGroup", err)
	}
	_, err := ge.g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: "one too many"})
	wantCode(t, err, connect.CodeResourceExhausted)
	if _, err := ge.g.CreateGroup(bob.ctx(), &parleyv1.CreateGroupRequest{Name: "bob's"}); err != nil {
		t.Errorf("another user's CreateGroup: %v, want success", err)
	}
}

func TestGroupMembershipChangesReachStreamsOnOtherNodes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		lost      bool // the nodes listen on different channels: every envelope is lost
		heartbeat time.Duration
	}{
		{"through the relay", false, time.Hour},
		{"from the heartbeat when every event is lost", true, 200 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ch1, ch2 := testChannel(), ""
			if ch2 = ch1; tt.lost {
				ch2 = testChannel()
			}
			n1, n2 := twoNodes(t, redisURL(t), ch1, ch2, tt.heartbeat)
			ge := groupEnvOn(n1)
			alice, bob, carol := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol")
			g := ge.create(t, alice, "Nodes", bob, carol).GetId()
			stream := openStream(t, n2, bob, g, 1)

			rpcSend(t, ge.m, carol, rpcToConv(g, "before")) // seq 2
			_, err := ge.g.RemoveMembers(alice.ctx(), &parleyv1.RemoveMembersRequest{GroupId: g, UserIds: ids(bob)})
			ge.must(t, "RemoveMembers", err) // seq 3
			const left = 3
			evs := untilMessage(t, stream, g, left)
			if !tt.lost {
				evs = append(evs, untilEvent(t, stream, func(ev *parleyv1.SubscribeResponse) bool {
					return ev.GetConversation().GetUpdated().GetId() == g
				})...)
				if u := evs[len(evs)-1].GetConversation().GetUpdated(); u.GetMembership() != parleyv1.MembershipState_MEMBERSHIP_STATE_REMOVED {
					t.Errorf("node 2 stream's view after the removal: %v, want REMOVED", u)
				}
			}
			rpcSend(t, ge.m, carol, rpcToConv(g, "after 1")) // seq 4
			rpcSend(t, ge.m, carol, rpcToConv(g, "after 2")) // seq 5
			if tt.lost {
				time.Sleep(3 * tt.heartbeat) // heartbeats that must not carry seqs 4 and 5
			}
			_, err = ge.g.AddMembers(carol.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(bob)})
			ge.must(t, "AddMembers", err) // seq 6
			evs = append(evs, untilEvent(t, stream, addedConversation(g))...)
			var seqs []int64
			for _, ev := range evs {
				if m := ev.GetMessage(); m.GetConversationId() == g {
					seqs = append(seqs, m.GetSeq())
				}
			}
			if diff := cmp.Diff([]int64{2, left}, seqs); diff != "" {
				t.Errorf("node 2 stream's messages of the group (-want +got):\n%s", diff)
			}
			added := evs[len(evs)-1].GetConversation().GetAdded()
			if added.GetConversation().GetJoinedSeq() != 6 || !slices.Equal(rpcSeqs(added.GetLatestMessages()), []int64{6}) {
				t.Errorf("rejoined conversation from seq %d with %v, want from 6 with [6]", added.GetConversation().GetJoinedSeq(), rpcSeqs(added.GetLatestMessages()))
			}
		})
	}
}

// Only the caller's contacts may be put in a group, and a block either way
// refuses like a stranger does, so the caller learns nothing of it.
func TestGroupsTakeOnlyTheCallersContacts(t *testing.T) {
	t.Parallel()
	ge := newGroupEnv(t, nil)
	owner, friend, blocker, blocked := ge.signUp("owner"), ge.signUp("friend"), ge.signUp("blocker"), ge.signUp("blocked")
	stranger := ge.env.signUp("stranger") // not in the circle
	_, err := ge.contacts().BlockUser(blocker.ctx(), &parleyv1.BlockUserRequest{UserId: owner.user.GetId()})
	ge.must(t, "BlockUser", err)
	_, err = ge.contacts().BlockUser(owner.ctx(), &parleyv1.BlockUserRequest{UserId: blocked.user.GetId()})
	ge.must(t, "BlockUser", err)

	var refusals []string
	for _, who := range []account{stranger, blocker, blocked} {
		_, err := ge.g.CreateGroup(owner.ctx(), &parleyv1.CreateGroupRequest{Name: "With " + who.user.GetUsername(), MemberIds: ids(friend, who)})
		wantCode(t, err, connect.CodePermissionDenied)
		refusals = append(refusals, errorMessage(err))
	}
	g := ge.create(t, owner, "Friends", friend).GetId()
	before := len(ge.log(t, owner, g))
	for _, who := range []account{stranger, blocker, blocked} {
		_, err := ge.g.AddMembers(owner.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(who)})
		wantCode(t, err, connect.CodePermissionDenied)
		refusals = append(refusals, errorMessage(err))
	}
	for _, m := range refusals[1:] {
		if m != refusals[0] {
			t.Errorf("refusals differ: %q and %q; a block must look like a stranger", refusals[0], m)
		}
	}
	if after := len(ge.log(t, owner, g)); after != before {
		t.Errorf("refused adds wrote %d log entries", after-before)
	}
	if n := ge.get(t, owner, g).GetGroup().GetMemberCount(); n != 2 {
		t.Errorf("group has %d members, want 2", n)
	}
	// A member adds their own contacts, not the owner's.
	_, err = ge.g.AddMembers(friend.ctx(), &parleyv1.AddMembersRequest{GroupId: g, UserIds: ids(stranger)})
	wantCode(t, err, connect.CodePermissionDenied)
}
