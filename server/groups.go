package server

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// Member roles as stored in members.role; a lower number outranks a higher.
const (
	roleOwner  = int16(parleyv1.MemberRole_MEMBER_ROLE_OWNER)
	roleAdmin  = int16(parleyv1.MemberRole_MEMBER_ROLE_ADMIN)
	roleMember = int16(parleyv1.MemberRole_MEMBER_ROLE_MEMBER)
)

const (
	maxGroupAdmins           = 10
	maxUsableInvites         = 20
	defaultListGroups        = 50
	defaultListMembers       = 100
	defaultListInvites       = 20
	inviteCodeBytes          = 16
	kindGroup          int16 = int16(parleyv1.ConversationKind_CONVERSATION_KIND_GROUP)
)

// groupsService implements parley.v1.GroupsService. A group is a group
// conversation plus its profile (a groups row); the group's id is its
// conversation's id. Every change runs under the conversation's row lock,
// which Send batches take too, so membership counts, roles, mutes and the
// dissolved flag are settled for whoever holds it. Each change is a system
// entry in the group's log, in the same transaction, and is published after
// commit: the entry, then a conversation-updated doorbell on which every
// stream reads its own user's view of the conversation.
type groupsService struct {
	parleyv1connect.UnimplementedGroupsServiceHandler

	db      *db.DB
	hub     *hub
	msgs    *messagesService
	calls   *callsService // takes members who leave out of the group's call
	cfg     Config
	joins   *keyedLimiter
	creates *keyedLimiter
}

func newGroupsService(d *db.DB, h *hub, msgs *messagesService, cfg Config) *groupsService {
	return &groupsService{
		db:   d,
		hub:  h,
		msgs: msgs,
		cfg:  cfg,
		// Invite codes are secrets: guessing them must be slow.
		joins: newKeyedLimiter(Rate{Burst: 10, Per: time.Minute}, 100_000),
		// Groups are cheap to create and each is a log with members: a
		// client in a loop must not make millions.
		creates: newKeyedLimiter(Rate{Burst: 100, Per: time.Hour}, 100_000),
	}
}

// groupTx is a group as one change sees it, under the conversation's lock.
type groupTx struct {
	q       *db.Queries
	group   db.Group
	members []db.Member // every row, former members too, longest-standing first
	me      db.Member
	lastSeq int64

	conv      db.Conversation
	callOut   []string // users who left with this change, to take out of the group's call
	dissolved bool     // the change dissolves the group: its call ends
	call      *callTx  // the change to the group's call, published after the group's

	entries []*parleyv1.Message // appended by this change
	notify  []string            // users who left with this change and must hear of it
	result  db.GetGroupRow      // the group after the change
	to      []string            // who hears of the change
}

// lockGroup locks a group's conversation and reads it with the caller's
// membership. A group that does not exist and one the caller never joined
// look the same.
func lockGroup(ctx context.Context, q *db.Queries, groupID, userID string) (*groupTx, error) {
	conv, err := q.LockConversation(ctx, groupID)
	if db.IsNoRows(err) {
		return nil, errGroupNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lock group conversation: %w", err)
	}
	if conv.Kind != kindGroup {
		return nil, errGroupNotFound
	}
	g, err := q.GetGroup(ctx, groupID)
	if err != nil {
		return nil, fmt.Errorf("get group: %w", err)
	}
	members, err := q.ListConversationMembers(ctx, groupID)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	gt := &groupTx{q: q, conv: conv, group: g.Group, members: members, lastSeq: conv.LastSeq}
	i := slices.IndexFunc(members, func(m db.Member) bool { return m.UserID == userID })
	if i < 0 {
		return nil, errGroupNotFound
	}
	if members[i].LeftSeq != nil {
		return nil, errNotGroupMember
	}
	gt.me = members[i]
	return gt, nil
}

// member returns the current member userID, if they are one.
func (gt *groupTx) member(userID string) (db.Member, bool) {
	for _, m := range gt.members {
		if m.UserID == userID && m.LeftSeq == nil {
			return m, true
		}
	}
	return db.Member{}, false
}

func (gt *groupTx) current() []db.Member {
	var out []db.Member
	for _, m := range gt.members {
		if m.LeftSeq == nil {
			out = append(out, m)
		}
	}
	return out
}

// isAdmin reports whether the caller is the owner or an admin.
func (gt *groupTx) isAdmin() bool { return gt.me.Role <= roleAdmin }

// record appends a system entry by senderID to the group's log.
func (gt *groupTx) record(ctx context.Context, senderID string, content *parleyv1.SystemContent) (int64, error) {
	encoded, err := proto.Marshal(&parleyv1.Message{Content: &parleyv1.Message_System{System: content}})
	if err != nil {
		return 0, fmt.Errorf("encode group entry: %w", err)
	}
	entry, err := appendEntry(ctx, gt.q, db.InsertMessageParams{
		ConversationID: gt.group.ConversationID, SenderID: &senderID, Kind: kindSystem, Content: encoded,
	})
	if err != nil {
		return 0, err
	}
	if entry.Seq != gt.lastSeq+1 {
		return 0, fmt.Errorf("group entry got seq %d, want %d: the conversation lock is not held", entry.Seq, gt.lastSeq+1)
	}
	gt.lastSeq = entry.Seq
	out, err := messageToProto(entry)
	if err != nil {
		return 0, err
	}
	gt.entries = append(gt.entries, out)
	return entry.Seq, nil
}

// change runs fn on a locked group in one transaction, then publishes what
// it recorded. Changes to a dissolved group are refused unless
// onDissolved is set.
func (s *groupsService) change(ctx context.Context, userID, groupID string, onDissolved bool, fn func(gt *groupTx) error) (*groupTx, error) {
	var gt *groupTx
	err := s.db.Tx(ctx, func(q *db.Queries) error {
		var err error
		if gt, err = lockGroup(ctx, q, groupID, userID); err != nil {
			return err
		}
		if gt.group.DissolvedAt != nil && !onDissolved {
			return errGroupDissolved
		}
		if err := fn(gt); err != nil {
			return err
		}
		if len(gt.callOut) > 0 || gt.dissolved {
			// Last: the call's end appends its entry after the group's.
			if gt.call, err = takeOutOfCall(ctx, q, gt.conv, gt.callOut, gt.dissolved); err != nil {
				return err
			}
		}
		if gt.result, err = q.GetGroup(ctx, groupID); err != nil {
			return fmt.Errorf("get group: %w", err)
		}
		if len(gt.entries) > 0 {
			if gt.to, err = currentMembers(ctx, q, groupID); err != nil {
				return err
			}
			gt.to = append(gt.to, gt.notify...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.publish(gt, true)
	if gt.call != nil {
		s.calls.publish(gt.call)
	}
	return gt, nil
}

// publish sends a change's entries to everyone concerned and, with
// doorbell, a conversation-updated event on which each stream reads its
// user's own view (members, roles and the caller's membership changed).
func (s *groupsService) publish(gt *groupTx, doorbell bool) {
	if len(gt.entries) == 0 {
		return
	}
	evs := make([]hubEvent, 0, len(gt.entries)+1)
	for _, m := range gt.entries {
		evs = append(evs, hubEvent{users: gt.to, ev: &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: m}}})
	}
	if doorbell {
		evs = append(evs, hubEvent{users: gt.to, ev: conversationUpdated(&parleyv1.Conversation{
			Id: gt.group.ConversationID, Kind: parleyv1.ConversationKind_CONVERSATION_KIND_GROUP, GroupId: gt.group.ConversationID,
		})})
	}
	s.hub.publishAll(evs)
}

// readGroup reads a group and the caller's current membership, for the
// RPCs that change nothing.
func (s *groupsService) readGroup(ctx context.Context, groupID, userID string) (db.GetGroupRow, db.Member, error) {
	me, err := s.db.GetMember(ctx, db.GetMemberParams{ConversationID: groupID, UserID: userID})
	if db.IsNoRows(err) {
		return db.GetGroupRow{}, me, errGroupNotFound
	}
	if err != nil {
		return db.GetGroupRow{}, me, fmt.Errorf("get member: %w", err)
	}
	g, err := s.db.GetGroup(ctx, groupID)
	if db.IsNoRows(err) { // a direct conversation's id
		return g, me, errGroupNotFound
	}
	if err != nil {
		return g, me, fmt.Errorf("get group: %w", err)
	}
	if me.LeftSeq != nil {
		return g, me, errNotGroupMember
	}
	return g, me, nil
}

// groupName checks what protovalidate cannot: a name must show something.
func groupName(name string) error {
	if strings.TrimSpace(name) == "" {
		return invalidArgument("name", "parley.name_not_blank", "must not be blank")
	}
	return nil
}

// addableUsers checks that adderID may put every user of ids in a group:
// each exists, is adderID's contact, and neither blocks the other.
func addableUsers(ctx context.Context, q *db.Queries, adderID string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	users, err := q.AddableUsers(ctx, db.AddableUsersParams{AdderID: adderID, Ids: ids})
	if err != nil {
		return fmt.Errorf("check users: %w", err)
	}
	if len(users) != len(ids) {
		return errUserNotFound
	}
	for _, u := range users {
		// One answer for "not a contact" and "a block": the caller learns
		// nothing of a block from it.
		if !u.Addable {
			return errAddNotContact
		}
	}
	return nil
}

func (s *groupsService) CreateGroup(ctx context.Context, req *parleyv1.CreateGroupRequest) (*parleyv1.CreateGroupResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if err := groupName(req.GetName()); err != nil {
		return nil, err
	}
	if ok, wait := s.creates.allow(c.UserID, time.Now()); !ok {
		return nil, resourceExhausted("too many groups created; wait", wait)
	}
	ids := slices.DeleteFunc(slices.Clone(req.GetMemberIds()), func(id string) bool { return id == c.UserID })
	if 1+len(ids) > s.cfg.MaxGroupMembers {
		return nil, errGroupFull
	}
	gt := &groupTx{}
	var avatar *string
	if id := req.GetAvatarMediaId(); id != "" {
		avatar = &id
	}
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if avatar != nil {
			if err := checkAvatar(ctx, q, c.UserID, *avatar); err != nil {
				return err
			}
		}
		if err := addableUsers(ctx, q, c.UserID, ids); err != nil {
			return err
		}
		conv, err := q.CreateConversation(ctx, kindGroup)
		if err != nil {
			return fmt.Errorf("create conversation: %w", err)
		}
		if err := q.InsertGroup(ctx, db.InsertGroupParams{ConversationID: conv.ID, Name: req.GetName(), CreatedBy: &c.UserID, AvatarMediaID: avatar}); err != nil {
			return fmt.Errorf("insert group: %w", err)
		}
		join := func(users []string, role int16) error {
			return q.JoinGroup(ctx, db.JoinGroupParams{ConversationID: conv.ID, UserIds: users, Role: role, JoinedSeq: 1, ReadSeq: 0})
		}
		if err := join([]string{c.UserID}, roleOwner); err != nil {
			return fmt.Errorf("add owner: %w", err)
		}
		if err := join(ids, roleMember); err != nil {
			return fmt.Errorf("add members: %w", err)
		}
		// The conversation is invisible to others until commit, so this
		// transaction holds it alone without taking its lock.
		gt.q, gt.group = q, db.Group{ConversationID: conv.ID}
		if _, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupCreated{
			GroupCreated: &parleyv1.GroupCreated{Name: req.GetName(), MemberIds: ids},
		}}); err != nil {
			return err
		}
		if gt.result, err = q.GetGroup(ctx, conv.ID); err != nil {
			return fmt.Errorf("get group: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The first entry of a conversation a stream does not know brings the
	// whole conversation: no doorbell needed.
	gt.to = append([]string{c.UserID}, ids...)
	s.publish(gt, false)
	conv, err := s.msgs.conversation(ctx, c.UserID, gt.result.Group.ConversationID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.CreateGroupResponse{Group: groupToProto(gt.result), Conversation: conv}, nil
}

func (s *groupsService) GetGroup(ctx context.Context, req *parleyv1.GetGroupRequest) (*parleyv1.GetGroupResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	g, me, err := s.readGroup(ctx, req.GetGroupId(), c.UserID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.GetGroupResponse{Group: groupToProto(g), Membership: memberToProto(me, time.Now())}, nil
}

func (s *groupsService) ListGroups(ctx context.Context, req *parleyv1.ListGroupsRequest) (*parleyv1.ListGroupsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	offset, err := pageOffset(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	size := cmpOr(int(req.GetPageSize()), defaultListGroups)
	rows, err := s.db.ListGroups(ctx, db.ListGroupsParams{UserID: c.UserID, MaxRows: int32(size + 1), Skip: int32(offset)})
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	res := &parleyv1.ListGroupsResponse{}
	if len(rows) > size {
		rows = rows[:size]
		res.NextPageToken = strconv.Itoa(offset + size)
	}
	for _, r := range rows {
		res.Groups = append(res.Groups, groupToProto(db.GetGroupRow(r)))
	}
	return res, nil
}

func (s *groupsService) ListMembers(ctx context.Context, req *parleyv1.ListMembersRequest) (*parleyv1.ListMembersResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if _, _, err := s.readGroup(ctx, req.GetGroupId(), c.UserID); err != nil {
		return nil, err
	}
	offset, err := pageOffset(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	size := cmpOr(int(req.GetPageSize()), defaultListMembers)
	rows, err := s.db.ListGroupMembers(ctx, db.ListGroupMembersParams{ConversationID: req.GetGroupId(), MaxRows: int32(size + 1), Skip: int32(offset)})
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	res := &parleyv1.ListMembersResponse{}
	if len(rows) > size {
		rows = rows[:size]
		res.NextPageToken = strconv.Itoa(offset + size)
	}
	now := time.Now()
	for _, r := range rows {
		res.Members = append(res.Members, memberToProto(r.Member, now))
		res.Users = append(res.Users, userToProto(r.User))
	}
	return res, nil
}

func (s *groupsService) UpdateGroup(ctx context.Context, req *parleyv1.UpdateGroupRequest) (*parleyv1.UpdateGroupResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	gt, err := s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if !gt.isAdmin() {
			return errNotGroupAdmin
		}
		g := gt.group
		p := db.UpdateGroupParams{ConversationID: g.ConversationID}
		var events []*parleyv1.SystemContent
		if req.Name != nil && req.GetName() != g.Name {
			if err := groupName(req.GetName()); err != nil {
				return err
			}
			p.Name = req.Name
			events = append(events, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupRenamed{GroupRenamed: &parleyv1.GroupRenamed{Name: req.GetName()}}})
		}
		if req.Announcement != nil && req.GetAnnouncement() != g.Announcement {
			p.Announcement = req.Announcement
			events = append(events, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_AnnouncementChanged{
				AnnouncementChanged: &parleyv1.AnnouncementChanged{Announcement: req.GetAnnouncement()},
			}})
		}
		if id := req.GetAvatarMediaId(); id != "" && (g.AvatarMediaID == nil || *g.AvatarMediaID != id) {
			if err := checkAvatar(ctx, gt.q, c.UserID, id); err != nil {
				return err
			}
			p.AvatarMediaID = &id
			events = append(events, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupAvatarChanged{GroupAvatarChanged: &parleyv1.GroupAvatarChanged{AvatarMediaId: id}}})
		} else if req.AvatarMediaId != nil && id == "" {
			if g.AvatarMediaID != nil {
				p.ClearAvatar = true
				events = append(events, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupAvatarChanged{GroupAvatarChanged: &parleyv1.GroupAvatarChanged{}}})
			}
		}
		settings := &parleyv1.GroupSettingsChanged{}
		if req.InvitesRestrictedToAdmins != nil && req.GetInvitesRestrictedToAdmins() != g.InvitesRestrictedToAdmins {
			p.InvitesRestrictedToAdmins, settings.InvitesRestrictedToAdmins = req.InvitesRestrictedToAdmins, req.InvitesRestrictedToAdmins
		}
		if req.MuteAll != nil && req.GetMuteAll() != g.MuteAll {
			p.MuteAll, settings.MuteAll = req.MuteAll, req.MuteAll
		}
		if settings.InvitesRestrictedToAdmins != nil || settings.MuteAll != nil {
			events = append(events, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupSettingsChanged{GroupSettingsChanged: settings}})
		}
		if len(events) == 0 {
			return nil
		}
		if err := gt.q.UpdateGroup(ctx, p); err != nil {
			return fmt.Errorf("update group: %w", err)
		}
		for _, ev := range events {
			if _, err := gt.record(ctx, c.UserID, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.UpdateGroupResponse{Group: groupToProto(gt.result)}, nil
}

// join makes users members from the next entry on, which the caller then
// records; a former member's row is reopened.
func (gt *groupTx) join(ctx context.Context, users []string) error {
	next := gt.lastSeq + 1
	err := gt.q.JoinGroup(ctx, db.JoinGroupParams{
		ConversationID: gt.group.ConversationID, UserIds: users, Role: roleMember, JoinedSeq: next, ReadSeq: next - 1,
	})
	if err != nil {
		return fmt.Errorf("join group: %w", err)
	}
	return nil
}

// leave ends the memberships of users at the next entry, which the caller
// then records, so that the entry is the last they see.
func (gt *groupTx) leave(ctx context.Context, users []string, removed bool) error {
	next := gt.lastSeq + 1
	err := gt.q.EndMemberships(ctx, db.EndMembershipsParams{
		ConversationID: gt.group.ConversationID, UserIds: users, LeftSeq: &next, Removed: removed,
	})
	if err != nil {
		return fmt.Errorf("end memberships: %w", err)
	}
	gt.notify = append(gt.notify, users...)
	gt.callOut = append(gt.callOut, users...)
	return nil
}

func (s *groupsService) AddMembers(ctx context.Context, req *parleyv1.AddMembersRequest) (*parleyv1.AddMembersResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var added []string
	gt, err := s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if gt.group.InvitesRestrictedToAdmins && !gt.isAdmin() {
			return errInvitesRestricted
		}
		for _, id := range req.GetUserIds() {
			if _, ok := gt.member(id); !ok {
				added = append(added, id)
			}
		}
		if len(added) == 0 {
			return nil
		}
		if err := addableUsers(ctx, gt.q, c.UserID, added); err != nil {
			return err
		}
		if len(gt.current())+len(added) > s.cfg.MaxGroupMembers {
			return errGroupFull
		}
		if err := gt.join(ctx, added); err != nil {
			return err
		}
		_, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_MembersAdded{
			MembersAdded: &parleyv1.MembersAdded{UserIds: added},
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.AddMembersResponse{AddedUserIds: added, Group: groupToProto(gt.result)}, nil
}

func (s *groupsService) RemoveMembers(ctx context.Context, req *parleyv1.RemoveMembersRequest) (*parleyv1.RemoveMembersResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	gt, err := s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if slices.Contains(req.GetUserIds(), c.UserID) {
			return invalidArgument("user_ids", "parley.not_self", "must not include yourself; use LeaveGroup")
		}
		for _, id := range req.GetUserIds() {
			m, ok := gt.member(id)
			if !ok {
				continue
			}
			if gt.me.Role >= m.Role {
				return errDoesNotOutrank
			}
			removed = append(removed, id)
		}
		if len(removed) == 0 {
			return nil
		}
		if err := gt.leave(ctx, removed, true); err != nil {
			return err
		}
		_, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_MembersRemoved{
			MembersRemoved: &parleyv1.MembersRemoved{UserIds: removed},
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.RemoveMembersResponse{RemovedUserIds: removed, Group: groupToProto(gt.result)}, nil
}

// LeaveGroup takes the caller out. An owner who leaves passes the group to
// the longest-standing admin, else the longest-standing member; the last
// member to leave ends the group, which nobody could read or write again.
func (s *groupsService) LeaveGroup(ctx context.Context, req *parleyv1.LeaveGroupRequest) (*parleyv1.LeaveGroupResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	_, err = s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		others := slices.DeleteFunc(gt.current(), func(m db.Member) bool { return m.UserID == c.UserID })
		if gt.me.Role == roleOwner && len(others) > 0 {
			heir := others[0]
			if i := slices.IndexFunc(others, func(m db.Member) bool { return m.Role == roleAdmin }); i >= 0 {
				heir = others[i]
			}
			if err := gt.transfer(ctx, heir.UserID); err != nil {
				return err
			}
		}
		if err := gt.leave(ctx, []string{c.UserID}, false); err != nil {
			return err
		}
		if _, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_MemberLeft{
			MemberLeft: &parleyv1.MemberLeft{UserId: c.UserID},
		}}); err != nil {
			return err
		}
		if len(others) == 0 {
			if err := gt.q.DissolveGroup(ctx, gt.group.ConversationID); err != nil {
				return fmt.Errorf("dissolve group: %w", err)
			}
			gt.dissolved = true
			if err := gt.q.RevokeGroupInvites(ctx, gt.group.ConversationID); err != nil {
				return fmt.Errorf("revoke invites: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.LeaveGroupResponse{}, nil
}

// transfer makes heir the owner and the caller an admin, and records it.
func (gt *groupTx) transfer(ctx context.Context, heir string) error {
	id := gt.group.ConversationID
	// One owner at a time (members_one_owner_idx): step down first.
	if err := gt.q.SetMemberRole(ctx, db.SetMemberRoleParams{ConversationID: id, UserID: gt.me.UserID, Role: roleAdmin}); err != nil {
		return fmt.Errorf("demote owner: %w", err)
	}
	if err := gt.q.SetMemberRole(ctx, db.SetMemberRoleParams{ConversationID: id, UserID: heir, Role: roleOwner}); err != nil {
		return fmt.Errorf("promote owner: %w", err)
	}
	// The new owner's own mute would stop the one member nobody outranks.
	if err := gt.q.SetMuteUntil(ctx, db.SetMuteUntilParams{ConversationID: id, UserID: heir}); err != nil {
		return fmt.Errorf("unmute owner: %w", err)
	}
	if err := gt.q.TouchGroup(ctx, id); err != nil {
		return fmt.Errorf("touch group: %w", err)
	}
	_, err := gt.record(ctx, gt.me.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_OwnershipTransferred{
		OwnershipTransferred: &parleyv1.OwnershipTransferred{FromUserId: gt.me.UserID, ToUserId: heir},
	}})
	return err
}

func (s *groupsService) TransferOwnership(ctx context.Context, req *parleyv1.TransferOwnershipRequest) (*parleyv1.TransferOwnershipResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	gt, err := s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if gt.me.Role != roleOwner {
			return errNotGroupOwner
		}
		if req.GetUserId() == c.UserID {
			return invalidArgument("user_id", "parley.not_self", "must be another member; you own the group already")
		}
		if _, ok := gt.member(req.GetUserId()); !ok {
			return errTargetNotMember
		}
		return gt.transfer(ctx, req.GetUserId())
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.TransferOwnershipResponse{Group: groupToProto(gt.result)}, nil
}

func (s *groupsService) SetMemberRole(ctx context.Context, req *parleyv1.SetMemberRoleRequest) (*parleyv1.SetMemberRoleResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var target db.Member
	_, err = s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if gt.me.Role != roleOwner {
			return errNotGroupOwner
		}
		var ok bool
		if target, ok = gt.member(req.GetUserId()); !ok {
			return errTargetNotMember
		}
		role := int16(req.GetRole())
		switch {
		case target.Role == roleOwner:
			return errTargetIsOwner
		case target.Role == role:
			return nil
		case role == roleAdmin && countRole(gt.current(), roleAdmin) >= maxGroupAdmins:
			return errTooManyAdmins
		}
		if err := gt.q.SetMemberRole(ctx, db.SetMemberRoleParams{ConversationID: gt.group.ConversationID, UserID: target.UserID, Role: role}); err != nil {
			return fmt.Errorf("set role: %w", err)
		}
		target.Role = role
		_, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_MemberRoleChanged{
			MemberRoleChanged: &parleyv1.MemberRoleChanged{UserId: target.UserID, Role: req.GetRole()},
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.SetMemberRoleResponse{Member: memberToProto(target, time.Now())}, nil
}

func countRole(members []db.Member, role int16) int {
	n := 0
	for _, m := range members {
		if m.Role == role {
			n++
		}
	}
	return n
}

func (s *groupsService) MuteMember(ctx context.Context, req *parleyv1.MuteMemberRequest) (*parleyv1.MuteMemberResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var target db.Member
	_, err = s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if !gt.isAdmin() {
			return errNotGroupAdmin
		}
		var ok bool
		if target, ok = gt.member(req.GetUserId()); !ok {
			return errTargetNotMember
		}
		if gt.me.Role >= target.Role {
			return errDoesNotOutrank
		}
		wasMuted := target.MuteUntil != nil && target.MuteUntil.After(time.Now())
		target.MuteUntil = nil
		if req.MutedUntil != nil {
			until := req.GetMutedUntil().AsTime()
			target.MuteUntil = &until
		} else if !wasMuted {
			return nil // unmuting a member who is not muted changes nothing
		}
		err := gt.q.SetMuteUntil(ctx, db.SetMuteUntilParams{ConversationID: gt.group.ConversationID, UserID: target.UserID, MuteUntil: target.MuteUntil})
		if err != nil {
			return fmt.Errorf("set mute: %w", err)
		}
		_, err = gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_MemberMuted{
			MemberMuted: &parleyv1.MemberMuted{UserId: target.UserID, MutedUntil: req.GetMutedUntil()},
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.MuteMemberResponse{Member: memberToProto(target, time.Now())}, nil
}

// mayInvite reports whether the member may add members and create codes.
func mayInvite(g db.Group, m db.Member) bool {
	return m.Role <= roleAdmin || !g.InvitesRestrictedToAdmins
}

func (s *groupsService) CreateInviteLink(ctx context.Context, req *parleyv1.CreateInviteLinkRequest) (*parleyv1.CreateInviteLinkResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var inv db.GroupInvite
	// Under the lock, so that concurrent creations respect the cap.
	_, err = s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		if !mayInvite(gt.group, gt.me) {
			return errInvitesRestricted
		}
		n, err := gt.q.CountUsableInvites(ctx, gt.group.ConversationID)
		if err != nil {
			return fmt.Errorf("count invites: %w", err)
		}
		if n >= maxUsableInvites {
			return errTooManyInvites
		}
		code := make([]byte, inviteCodeBytes)
		_, _ = rand.Read(code) // crypto/rand never fails
		p := db.InsertInviteParams{
			Code: base64.RawURLEncoding.EncodeToString(code), ConversationID: gt.group.ConversationID,
			CreatorID: c.UserID, MaxUses: req.GetMaxUses(),
		}
		if req.ExpireTime != nil {
			at := req.GetExpireTime().AsTime()
			p.ExpiresAt = &at
		}
		if inv, err = gt.q.InsertInvite(ctx, p); err != nil {
			return fmt.Errorf("insert invite: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.CreateInviteLinkResponse{InviteLink: inviteToProto(inv)}, nil
}

func (s *groupsService) RevokeInviteLink(ctx context.Context, req *parleyv1.RevokeInviteLinkRequest) (*parleyv1.RevokeInviteLinkResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var inv db.GroupInvite
	_, err = s.change(ctx, c.UserID, req.GetGroupId(), false, func(gt *groupTx) error {
		var err error
		inv, err = gt.q.GetInvite(ctx, req.GetCode())
		if db.IsNoRows(err) || err == nil && inv.ConversationID != gt.group.ConversationID {
			return errInviteNotFound
		}
		if err != nil {
			return fmt.Errorf("get invite: %w", err)
		}
		if inv.CreatorID != c.UserID && !gt.isAdmin() {
			return errMayNotRevokeInvite
		}
		if inv, err = gt.q.RevokeInvite(ctx, inv.Code); err != nil {
			return fmt.Errorf("revoke invite: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.RevokeInviteLinkResponse{InviteLink: inviteToProto(inv)}, nil
}

func (s *groupsService) ListInviteLinks(ctx context.Context, req *parleyv1.ListInviteLinksRequest) (*parleyv1.ListInviteLinksResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	_, me, err := s.readGroup(ctx, req.GetGroupId(), c.UserID)
	if err != nil {
		return nil, err
	}
	offset, err := pageOffset(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	size := cmpOr(int(req.GetPageSize()), defaultListInvites)
	p := db.ListInvitesParams{ConversationID: req.GetGroupId(), IncludeUnusable: req.GetIncludeUnusable(), MaxRows: int32(size + 1), Skip: int32(offset)}
	if me.Role > roleAdmin {
		p.CreatorID = &c.UserID
	}
	rows, err := s.db.ListInvites(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list invites: %w", err)
	}
	res := &parleyv1.ListInviteLinksResponse{}
	if len(rows) > size {
		rows = rows[:size]
		res.NextPageToken = strconv.Itoa(offset + size)
	}
	for _, r := range rows {
		res.InviteLinks = append(res.InviteLinks, inviteToProto(r))
	}
	return res, nil
}

func (s *groupsService) JoinByInvite(ctx context.Context, req *parleyv1.JoinByInviteRequest) (*parleyv1.JoinByInviteResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if ok, wait := s.joins.allow(c.UserID, time.Now()); !ok {
		return nil, resourceExhausted("too many invite codes tried; wait", wait)
	}
	inv, err := s.db.GetInvite(ctx, req.GetCode())
	if db.IsNoRows(err) {
		return nil, errInviteNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get invite: %w", err)
	}
	gt := &groupTx{}
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		conv, err := q.LockConversation(ctx, inv.ConversationID)
		if err != nil {
			return fmt.Errorf("lock group conversation: %w", err)
		}
		g, err := q.GetGroup(ctx, inv.ConversationID)
		if err != nil {
			return fmt.Errorf("get group: %w", err)
		}
		members, err := q.ListConversationMembers(ctx, inv.ConversationID)
		if err != nil {
			return fmt.Errorf("list members: %w", err)
		}
		*gt = groupTx{q: q, group: g.Group, members: members, lastSeq: conv.LastSeq, result: g}
		if _, ok := gt.member(c.UserID); ok {
			return nil // already a member: nothing changes, the code is not used
		}
		if g.Group.DissolvedAt != nil {
			return errGroupDissolved
		}
		if i := slices.IndexFunc(members, func(m db.Member) bool { return m.UserID == c.UserID }); i >= 0 && members[i].Removed {
			return errRemovedFromGroup
		}
		// A code works while its creator may still invite.
		if creator, ok := gt.member(inv.CreatorID); !ok || !mayInvite(g.Group, creator) {
			return errInviteInactive
		}
		if len(gt.current())+1 > s.cfg.MaxGroupMembers {
			return errGroupFull
		}
		if _, err := q.UseInvite(ctx, inv.Code); db.IsNoRows(err) {
			return inviteUnusable(ctx, q, inv.Code)
		} else if err != nil {
			return fmt.Errorf("use invite: %w", err)
		}
		if err := gt.join(ctx, []string{c.UserID}); err != nil {
			return err
		}
		if _, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_MemberJoined{
			MemberJoined: &parleyv1.MemberJoined{UserId: c.UserID, InviterId: inv.CreatorID},
		}}); err != nil {
			return err
		}
		if gt.result, err = q.GetGroup(ctx, inv.ConversationID); err != nil {
			return fmt.Errorf("get group: %w", err)
		}
		gt.to, err = currentMembers(ctx, q, inv.ConversationID)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.publish(gt, true)
	conv, err := s.msgs.conversation(ctx, c.UserID, inv.ConversationID)
	if err != nil {
		return nil, err
	}
	return &parleyv1.JoinByInviteResponse{Group: groupToProto(gt.result), Conversation: conv}, nil
}

// inviteUnusable says why a code that UseInvite refused no longer works.
func inviteUnusable(ctx context.Context, q *db.Queries, code string) error {
	inv, err := q.GetInvite(ctx, code)
	if err != nil {
		return fmt.Errorf("get invite: %w", err)
	}
	switch {
	case inv.RevokedAt != nil:
		return errInviteRevoked
	case inv.MaxUses > 0 && inv.UseCount >= inv.MaxUses:
		return errInviteUsedUp
	default:
		return errInviteExpired
	}
}

func (s *groupsService) DissolveGroup(ctx context.Context, req *parleyv1.DissolveGroupRequest) (*parleyv1.DissolveGroupResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	gt, err := s.change(ctx, c.UserID, req.GetGroupId(), true, func(gt *groupTx) error {
		if gt.me.Role != roleOwner {
			return errNotGroupOwner
		}
		if gt.group.DissolvedAt != nil {
			return nil
		}
		if err := gt.q.DissolveGroup(ctx, gt.group.ConversationID); err != nil {
			return fmt.Errorf("dissolve group: %w", err)
		}
		gt.dissolved = true
		if err := gt.q.RevokeGroupInvites(ctx, gt.group.ConversationID); err != nil {
			return fmt.Errorf("revoke invites: %w", err)
		}
		_, err := gt.record(ctx, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_GroupDissolved{GroupDissolved: &parleyv1.GroupDissolved{}}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &parleyv1.DissolveGroupResponse{Group: groupToProto(gt.result)}, nil
}

// cmpOr returns n, or def when n is zero.
func cmpOr(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

func groupToProto(r db.GetGroupRow) *parleyv1.Group {
	g := r.Group
	out := &parleyv1.Group{
		Id:             g.ConversationID,
		ConversationId: g.ConversationID,
		Name:           g.Name,
		Announcement:   g.Announcement,
		OwnerId:        r.OwnerID,
		MemberCount:    r.MemberCount,
		Settings:       &parleyv1.GroupSettings{InvitesRestrictedToAdmins: g.InvitesRestrictedToAdmins, MuteAll: g.MuteAll},
		Dissolved:      g.DissolvedAt != nil,
		CreateTime:     timestamp(g.CreatedAt),
		UpdateTime:     timestamp(g.UpdatedAt),
	}
	if g.AvatarMediaID != nil {
		out.AvatarMediaId = *g.AvatarMediaID
	}
	return out
}

// memberToProto converts a member; a mute that has ended is not shown.
func memberToProto(m db.Member, now time.Time) *parleyv1.Member {
	out := &parleyv1.Member{UserId: m.UserID, Role: parleyv1.MemberRole(m.Role), JoinTime: timestamp(m.JoinedAt)}
	if m.MuteUntil != nil && m.MuteUntil.After(now) {
		out.MutedUntil = timestamp(*m.MuteUntil)
	}
	return out
}

func inviteToProto(inv db.GroupInvite) *parleyv1.InviteLink {
	out := &parleyv1.InviteLink{
		Code:       inv.Code,
		GroupId:    inv.ConversationID,
		CreatorId:  inv.CreatorID,
		CreateTime: timestamp(inv.CreatedAt),
		MaxUses:    inv.MaxUses,
		UseCount:   inv.UseCount,
		Revoked:    inv.RevokedAt != nil,
	}
	if inv.ExpiresAt != nil {
		out.ExpireTime = timestamp(*inv.ExpiresAt)
	}
	return out
}
