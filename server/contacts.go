package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// Contacts are mutual friendships made by accepting a friend request; blocks
// are one-sided. Every change between two users runs in one transaction that
// first locks both users' account conversations (begin), so that crossing
// requests, an accept racing a block, or two devices of one user acting at
// once are serialised and each sees what the other did; unique constraints
// back the invariants up (one pending request per pair, one contact row per
// direction).
//
// Each change is an entry in the account conversation of every user it
// concerns, written in the same transaction, and the entries and their live
// ContactEvents are published after commit, so every device converges through
// Subscribe and Sync.
//
// A block is never revealed to the user blocked: their friend requests look
// sent but are hidden from the blocker (friend_requests.hidden), and pending
// requests end at the block as a decline or a cancel would.

const (
	maxBlocked                = 10_000
	defaultListFriendRequests = 20
	defaultListContacts       = 100
	defaultListBlocked        = 100
)

// contactsService implements parley.v1.ContactsService.
type contactsService struct {
	parleyv1connect.UnimplementedContactsServiceHandler

	db       *db.DB
	hub      *hub
	msgs     *messagesService // builds the conversation a remark retitles
	requests *keyedLimiter
}

func newContactsService(d *db.DB, h *hub, msgs *messagesService, cfg Config) *contactsService {
	return &contactsService{db: d, hub: h, msgs: msgs, requests: newKeyedLimiter(cfg.FriendRequests, 100_000)}
}

// contactChange is one transaction's changes between two users: it writes
// their account entries and gathers the events to publish after commit.
type contactChange struct {
	q      *db.Queries
	caller caller
	users  map[string]db.User
	events []hubEvent
}

// begin locks the pair of users for the transaction: their account
// conversations, in id order. Every change between two users writes both
// account logs (or could), so holding both locks before reading anything
// serialises every change concerning either user: two crossing requests, or
// an accept racing a block, run one after the other and the second sees what
// the first did. Taking them in id order, as Send's batches do, means two
// transactions never wait for each other in a circle. begin also loads both
// profiles; errUserNotFound when other does not exist.
func (s *contactsService) begin(ctx context.Context, q *db.Queries, c caller, other string) (*contactChange, error) {
	convs, err := q.GetAccountConversationIDs(ctx, []string{c.UserID, other})
	if err != nil {
		return nil, fmt.Errorf("find account conversations: %w", err)
	}
	if _, err := q.LockConversations(ctx, convs); err != nil {
		return nil, fmt.Errorf("lock account conversations: %w", err)
	}
	users, err := q.GetUsers(ctx, []string{c.UserID, other})
	if err != nil {
		return nil, fmt.Errorf("get users: %w", err)
	}
	ch := &contactChange{q: q, caller: c, users: make(map[string]db.User, 2)}
	for _, u := range users {
		ch.users[u.ID] = u
	}
	if _, ok := ch.users[other]; !ok {
		return nil, errUserNotFound
	}
	return ch, nil
}

// record appends content to owner's account log as what actor did.
func (ch *contactChange) record(ctx context.Context, owner, actor string, content *parleyv1.SystemContent) error {
	entry, err := appendAccountEntryBy(ctx, ch.q, owner, actor, content)
	if err != nil {
		return err
	}
	ch.events = append(ch.events, hubEvent{users: []string{owner}, ev: entry})
	return nil
}

// tell publishes a live ContactEvent to user after commit. The caller's own
// device has the RPC's response instead, unless toCaller.
func (ch *contactChange) tell(user string, ev *parleyv1.ContactEvent, toCaller bool) {
	e := hubEvent{users: []string{user}, ev: &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Contact{Contact: ev}}}
	if user == ch.caller.UserID && !toCaller {
		e.skip = ch.caller.SessionID
	}
	ch.events = append(ch.events, e)
}

// requestChanged records a request's new state in the logs of both users, and
// tells them. A hidden request concerns its sender only.
func (ch *contactChange) requestChanged(ctx context.Context, r db.FriendRequest, actor string) error {
	content := friendRequestChanged(r)
	owners := []string{r.FromUserID}
	if !r.Hidden {
		owners = append(owners, r.ToUserID)
	}
	for _, owner := range owners {
		if err := ch.record(ctx, owner, actor, content); err != nil {
			return err
		}
		ch.tell(owner, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_FriendRequest{FriendRequest: friendRequestToProto(r, ch.users)}}, false)
	}
	return nil
}

// friendRequestChanged is the account entry of r's current state.
func friendRequestChanged(r db.FriendRequest) *parleyv1.SystemContent {
	return &parleyv1.SystemContent{Event: &parleyv1.SystemContent_FriendRequest{FriendRequest: &parleyv1.FriendRequestChanged{
		RequestId:  r.ID,
		FromUserId: r.FromUserID,
		ToUserId:   r.ToUserID,
		State:      parleyv1.FriendRequestState(r.State),
		Greeting:   r.Greeting,
	}}}
}

// settle moves pending request r to state, as actor did.
func (ch *contactChange) settle(ctx context.Context, r db.FriendRequest, state parleyv1.FriendRequestState, actor string) (db.FriendRequest, error) {
	r, err := ch.q.SettleFriendRequest(ctx, db.SettleFriendRequestParams{ID: r.ID, State: int16(state)})
	if db.IsNoRows(err) {
		return r, errFriendRequestSettled
	}
	if err != nil {
		return r, fmt.Errorf("settle friend request: %w", err)
	}
	return r, ch.requestChanged(ctx, r, actor)
}

// accept accepts pending request r on behalf of its recipient, who gives the
// sender remark, and returns the request and the recipient's new contact.
func (ch *contactChange) accept(ctx context.Context, r db.FriendRequest, remark string) (db.FriendRequest, *parleyv1.Contact, error) {
	r, err := ch.settle(ctx, r, parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_ACCEPTED, r.ToUserID)
	if err != nil {
		return r, nil, err
	}
	var mine *parleyv1.Contact
	for _, side := range []struct{ owner, other, remark string }{
		{r.ToUserID, r.FromUserID, remark},
		{r.FromUserID, r.ToUserID, ""},
	} {
		row, err := ch.q.AddContact(ctx, db.AddContactParams{UserID: side.owner, ContactID: side.other, Remark: side.remark})
		if err != nil {
			return r, nil, fmt.Errorf("add contact: %w", err)
		}
		contact := contactToProto(row, ch.users[side.other])
		ch.tell(side.owner, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_Contact{Contact: contact}}, false)
		if side.owner == r.ToUserID {
			mine = contact
		}
	}
	return r, mine, nil
}

func (s *contactsService) SendFriendRequest(ctx context.Context, req *parleyv1.SendFriendRequestRequest) (*parleyv1.SendFriendRequestResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	to := req.GetUserId()
	if to == c.UserID {
		return nil, invalidArgument("user_id", "parley.not_self", "cannot send a friend request to yourself")
	}
	if ok, wait := s.requests.allow(c.UserID, time.Now()); !ok {
		return nil, resourceExhausted("sending friend requests too fast; try again later", wait)
	}
	res := &parleyv1.SendFriendRequestResponse{}
	var ch *contactChange
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if ch, err = s.begin(ctx, q, c, to); err != nil {
			return err
		}
		rel, err := q.GetRelationship(ctx, db.GetRelationshipParams{UserID: c.UserID, OtherID: to})
		if err != nil {
			return fmt.Errorf("get relationship: %w", err)
		}
		if rel.BlocksOther {
			return errYouBlocked
		}
		if rel.IsContact {
			return errAlreadyContacts
		}
		pending, err := q.PendingFriendRequest(ctx, db.PendingFriendRequestParams{A: c.UserID, B: to})
		switch {
		case err == nil && pending.FromUserID == c.UserID:
			// Asking again changes nothing: the request still waits.
			res.FriendRequest = friendRequestToProto(pending, ch.users)
			return nil
		case err == nil:
			// They asked first: both want it.
			r, contact, err := ch.accept(ctx, pending, "")
			if err != nil {
				return err
			}
			res.FriendRequest, res.Contact = friendRequestToProto(r, ch.users), contact
			return nil
		case !db.IsNoRows(err):
			return fmt.Errorf("find pending friend request: %w", err)
		}
		// To a user who blocks the caller the request is stored hidden:
		// the caller sees it sent, the blocker sees nothing. Refusing it
		// would tell the caller that they are blocked.
		r, err := q.CreateFriendRequest(ctx, db.CreateFriendRequestParams{
			FromUserID: c.UserID, ToUserID: to, Greeting: req.GetGreeting(), Hidden: rel.BlockedByOther,
		})
		if err != nil {
			return fmt.Errorf("create friend request: %w", err)
		}
		res.FriendRequest = friendRequestToProto(r, ch.users)
		return ch.requestChanged(ctx, r, c.UserID)
	})
	if err != nil {
		return nil, err
	}
	s.hub.publishAll(ch.events)
	return res, nil
}

func (s *contactsService) ListFriendRequests(ctx context.Context, req *parleyv1.ListFriendRequestsRequest) (*parleyv1.ListFriendRequestsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	size := pageSize(req.GetPageSize(), defaultListFriendRequests)
	afterTime, afterID, err := parsePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	var rows []db.FriendRequest
	if req.GetDirection() == parleyv1.FriendRequestDirection_FRIEND_REQUEST_DIRECTION_INCOMING {
		rows, err = s.db.ListIncomingFriendRequests(ctx, db.ListIncomingFriendRequestsParams{
			UserID: c.UserID, State: int16(req.GetState()), AfterTime: afterTime, AfterID: afterID, MaxRows: int32(size + 1),
		})
	} else {
		rows, err = s.db.ListOutgoingFriendRequests(ctx, db.ListOutgoingFriendRequestsParams{
			UserID: c.UserID, State: int16(req.GetState()), AfterTime: afterTime, AfterID: afterID, MaxRows: int32(size + 1),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("list friend requests: %w", err)
	}
	res := &parleyv1.ListFriendRequestsResponse{}
	if len(rows) > size {
		rows = rows[:size]
		last := rows[size-1]
		res.NextPageToken = pageToken(last.CreatedAt, last.ID)
	}
	ids := make([]string, 0, 2*len(rows))
	for _, r := range rows {
		ids = append(ids, r.FromUserID, r.ToUserID)
	}
	users, err := s.db.GetUsers(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("get users: %w", err)
	}
	byID := make(map[string]db.User, len(users))
	for _, u := range users {
		byID[u.ID] = u
	}
	for _, r := range rows {
		res.FriendRequests = append(res.FriendRequests, friendRequestToProto(r, byID))
	}
	return res, nil
}

// pendingRequest finds a request the caller may answer or withdraw, then
// locks its two users (begin) and reads it again: it may have changed
// meanwhile. A request the caller may not touch, or one hidden from them, is
// not found.
func (s *contactsService) pendingRequest(ctx context.Context, q *db.Queries, c caller, id string, mine func(db.FriendRequest) bool) (*contactChange, db.FriendRequest, error) {
	r, err := q.GetFriendRequest(ctx, id)
	if db.IsNoRows(err) || err == nil && !mine(r) {
		return nil, r, errFriendRequestUnknown
	}
	if err != nil {
		return nil, r, fmt.Errorf("get friend request: %w", err)
	}
	other := r.FromUserID
	if other == c.UserID {
		other = r.ToUserID
	}
	ch, err := s.begin(ctx, q, c, other)
	if err != nil {
		return nil, r, err
	}
	if r, err = q.GetFriendRequest(ctx, id); err != nil {
		return nil, r, fmt.Errorf("get friend request: %w", err)
	}
	if !mine(r) {
		return nil, r, errFriendRequestUnknown
	}
	if r.State != int16(parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_PENDING) {
		return nil, r, errFriendRequestSettled
	}
	return ch, r, nil
}

func (s *contactsService) RespondFriendRequest(ctx context.Context, req *parleyv1.RespondFriendRequestRequest) (*parleyv1.RespondFriendRequestResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	toMe := func(r db.FriendRequest) bool { return r.ToUserID == c.UserID && !r.Hidden }
	res := &parleyv1.RespondFriendRequestResponse{}
	var ch *contactChange
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		var r db.FriendRequest
		if ch, r, err = s.pendingRequest(ctx, q, c, req.GetRequestId(), toMe); err != nil {
			return err
		}
		if req.GetDecision() == parleyv1.FriendRequestDecision_FRIEND_REQUEST_DECISION_ACCEPT {
			r, res.Contact, err = ch.accept(ctx, r, req.GetRemark())
		} else {
			r, err = ch.settle(ctx, r, parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_DECLINED, c.UserID)
		}
		res.FriendRequest = friendRequestToProto(r, ch.users)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.hub.publishAll(ch.events)
	return res, nil
}

func (s *contactsService) CancelFriendRequest(ctx context.Context, req *parleyv1.CancelFriendRequestRequest) (*parleyv1.CancelFriendRequestResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	fromMe := func(r db.FriendRequest) bool { return r.FromUserID == c.UserID }
	res := &parleyv1.CancelFriendRequestResponse{}
	var ch *contactChange
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		var r db.FriendRequest
		if ch, r, err = s.pendingRequest(ctx, q, c, req.GetRequestId(), fromMe); err != nil {
			return err
		}
		r, err = ch.settle(ctx, r, parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_CANCELLED, c.UserID)
		res.FriendRequest = friendRequestToProto(r, ch.users)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.hub.publishAll(ch.events)
	return res, nil
}

func (s *contactsService) ListContacts(ctx context.Context, req *parleyv1.ListContactsRequest) (*parleyv1.ListContactsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	size := pageSize(req.GetPageSize(), defaultListContacts)
	afterTime, afterID, err := parsePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, err := s.db.ListContacts(ctx, db.ListContactsParams{UserID: c.UserID, AfterTime: afterTime, AfterID: afterID, MaxRows: int32(size + 1)})
	if err != nil {
		return nil, fmt.Errorf("list contacts: %w", err)
	}
	res := &parleyv1.ListContactsResponse{}
	if len(rows) > size {
		rows = rows[:size]
		last := rows[size-1].Contact
		res.NextPageToken = pageToken(last.CreatedAt, last.ContactID)
	}
	for _, r := range rows {
		res.Contacts = append(res.Contacts, contactToProto(r.Contact, r.User))
	}
	return res, nil
}

func (s *contactsService) SetContactRemark(ctx context.Context, req *parleyv1.SetContactRemarkRequest) (*parleyv1.SetContactRemarkResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var (
		contact *parleyv1.Contact
		ch      *contactChange
	)
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		row, err := q.SetContactRemark(ctx, db.SetContactRemarkParams{UserID: c.UserID, ContactID: req.GetUserId(), Remark: req.GetRemark()})
		if db.IsNoRows(err) {
			return errNotContact
		}
		if err != nil {
			return fmt.Errorf("set contact remark: %w", err)
		}
		u, err := q.GetUser(ctx, row.ContactID)
		if err != nil {
			return fmt.Errorf("get contact: %w", err)
		}
		contact = contactToProto(row, u)
		// The remark is the caller's alone: only their log records it.
		ch = &contactChange{q: q, caller: c}
		ch.tell(c.UserID, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_Contact{Contact: contact}}, false)
		return ch.record(ctx, c.UserID, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_SettingsChanged{
			SettingsChanged: &parleyv1.SettingsChanged{Setting: &parleyv1.SettingsChanged_ContactRemark{
				ContactRemark: &parleyv1.ContactRemarkChanged{UserId: row.ContactID, Remark: row.Remark},
			}},
		}})
	})
	if err != nil {
		return nil, err
	}
	// The remark is the title of their direct conversation for the caller:
	// every device of theirs, this one too, gets the conversation retitled.
	convID, err := s.db.GetDirectConversationID(ctx, db.GetDirectConversationIDParams{
		UserLow: min(c.UserID, req.GetUserId()), UserHigh: max(c.UserID, req.GetUserId()),
	})
	switch {
	case err == nil:
		conv, err := s.msgs.conversation(ctx, c.UserID, convID)
		if err != nil {
			return nil, err
		}
		ch.events = append(ch.events, hubEvent{users: []string{c.UserID}, ev: conversationUpdated(conv)})
	case !db.IsNoRows(err):
		return nil, fmt.Errorf("look up direct conversation: %w", err)
	}
	s.hub.publishAll(ch.events)
	return &parleyv1.SetContactRemarkResponse{Contact: contact}, nil
}

func (s *contactsService) RemoveContact(ctx context.Context, req *parleyv1.RemoveContactRequest) (*parleyv1.RemoveContactResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	other := req.GetUserId()
	if other == c.UserID {
		return nil, errNotContact
	}
	var ch *contactChange
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if ch, err = s.begin(ctx, q, c, other); errors.Is(err, errUserNotFound) {
			return errNotContact
		} else if err != nil {
			return err
		}
		rows, err := q.RemoveContacts(ctx, db.RemoveContactsParams{A: c.UserID, B: other})
		if err != nil {
			return fmt.Errorf("remove contacts: %w", err)
		}
		if len(rows) == 0 {
			return errNotContact
		}
		for _, side := range [][2]string{{c.UserID, other}, {other, c.UserID}} {
			owner, former := side[0], side[1]
			if err := ch.record(ctx, owner, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_ContactRemoved{
				ContactRemoved: &parleyv1.ContactRemoved{UserId: former},
			}}); err != nil {
				return err
			}
			ch.tell(owner, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_RemovedContactUserId{RemovedContactUserId: former}}, false)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.hub.publishAll(ch.events)
	return &parleyv1.RemoveContactResponse{}, nil
}

func (s *contactsService) BlockUser(ctx context.Context, req *parleyv1.BlockUserRequest) (*parleyv1.BlockUserResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	other := req.GetUserId()
	if other == c.UserID {
		return nil, invalidArgument("user_id", "parley.not_self", "cannot block yourself")
	}
	res := &parleyv1.BlockUserResponse{}
	var ch *contactChange
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if ch, err = s.begin(ctx, q, c, other); err != nil {
			return err
		}
		b, err := q.GetBlock(ctx, db.GetBlockParams{BlockerID: c.UserID, BlockedID: other})
		if err == nil {
			res.BlockedUser = blockedToProto(b, ch.users[other]) // blocked already: nothing changes
			return nil
		}
		if !db.IsNoRows(err) {
			return fmt.Errorf("get block: %w", err)
		}
		n, err := q.CountBlocked(ctx, c.UserID)
		if err != nil {
			return fmt.Errorf("count blocked: %w", err)
		}
		if n >= maxBlocked {
			return errTooManyBlocked
		}
		if b, err = q.BlockUser(ctx, db.BlockUserParams{BlockerID: c.UserID, BlockedID: other}); err != nil {
			return fmt.Errorf("block user: %w", err)
		}
		res.BlockedUser = blockedToProto(b, ch.users[other])
		// A pending request ends as if the caller had answered it, which
		// tells the other user nothing a decline or a cancel would not.
		pending, err := q.PendingFriendRequest(ctx, db.PendingFriendRequestParams{A: c.UserID, B: other})
		switch {
		case err == nil && pending.ToUserID == c.UserID:
			_, err = ch.settle(ctx, pending, parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_DECLINED, c.UserID)
		case err == nil:
			_, err = ch.settle(ctx, pending, parleyv1.FriendRequestState_FRIEND_REQUEST_STATE_CANCELLED, c.UserID)
		case db.IsNoRows(err):
			err = nil
		default:
			err = fmt.Errorf("find pending friend request: %w", err)
		}
		if err != nil {
			return err
		}
		// Only the blocker's log records the block: the user blocked is never told.
		ch.tell(c.UserID, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_BlockedUser{BlockedUser: res.BlockedUser}}, false)
		return ch.record(ctx, c.UserID, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_UserBlocked{
			UserBlocked: &parleyv1.UserBlocked{UserId: other},
		}})
	})
	if err != nil {
		return nil, err
	}
	s.hub.publishAll(ch.events)
	return res, nil
}

func (s *contactsService) UnblockUser(ctx context.Context, req *parleyv1.UnblockUserRequest) (*parleyv1.UnblockUserResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	other := req.GetUserId()
	if other == c.UserID {
		return &parleyv1.UnblockUserResponse{}, nil // nobody blocks themselves
	}
	var ch *contactChange
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if ch, err = s.begin(ctx, q, c, other); errors.Is(err, errUserNotFound) {
			return nil // an unknown user is not blocked
		} else if err != nil {
			return err
		}
		if _, err := q.UnblockUser(ctx, db.UnblockUserParams{BlockerID: c.UserID, BlockedID: other}); db.IsNoRows(err) {
			return nil // not blocked: nothing changes
		} else if err != nil {
			return fmt.Errorf("unblock user: %w", err)
		}
		ch.tell(c.UserID, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_UnblockedUserId{UnblockedUserId: other}}, false)
		if err := ch.record(ctx, c.UserID, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_UserUnblocked{
			UserUnblocked: &parleyv1.UserUnblocked{UserId: other},
		}}); err != nil {
			return err
		}
		// A request the user sent during the block still waits for an
		// answer, as it always did for them: it reaches the caller now.
		revealed, err := q.RevealFriendRequests(ctx, db.RevealFriendRequestsParams{FromUserID: other, ToUserID: c.UserID})
		if err != nil {
			return fmt.Errorf("reveal friend requests: %w", err)
		}
		for _, r := range revealed {
			if err := ch.record(ctx, c.UserID, other, friendRequestChanged(r)); err != nil {
				return err
			}
			ch.tell(c.UserID, &parleyv1.ContactEvent{Change: &parleyv1.ContactEvent_FriendRequest{FriendRequest: friendRequestToProto(r, ch.users)}}, true)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ch != nil {
		s.hub.publishAll(ch.events)
	}
	return &parleyv1.UnblockUserResponse{}, nil
}

func (s *contactsService) ListBlocked(ctx context.Context, req *parleyv1.ListBlockedRequest) (*parleyv1.ListBlockedResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	size := pageSize(req.GetPageSize(), defaultListBlocked)
	afterTime, afterID, err := parsePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, err := s.db.ListBlocked(ctx, db.ListBlockedParams{UserID: c.UserID, AfterTime: afterTime, AfterID: afterID, MaxRows: int32(size + 1)})
	if err != nil {
		return nil, fmt.Errorf("list blocked: %w", err)
	}
	res := &parleyv1.ListBlockedResponse{}
	if len(rows) > size {
		rows = rows[:size]
		last := rows[size-1].Block
		res.NextPageToken = pageToken(last.CreatedAt, last.BlockedID)
	}
	for _, r := range rows {
		res.BlockedUsers = append(res.BlockedUsers, blockedToProto(r.Block, r.User))
	}
	return res, nil
}

// directRule says whether a direct message may reach a recipient with the
// given privacy setting. contact is whether the two are contacts,
// senderBlocks and recipientBlocks whether either blocked the other, sent and
// replies how many messages the sender and the recipient have sent in the
// conversation. A block stops messages both ways. The recipient's block is
// checked last and its error does not name it: a sender the privacy rules
// refuse anyway learns only those rules, so a block tells the user blocked no
// more than it must.
func directRule(privacy int16, contact, senderBlocks, recipientBlocks bool, sent, replies int64) error {
	if senderBlocks {
		return errYouBlocked
	}
	if !contact {
		switch parleyv1.MessagePrivacy(privacy) {
		case parleyv1.MessagePrivacy_MESSAGE_PRIVACY_FRIENDS_ONLY:
			return errFriendsOnly
		case parleyv1.MessagePrivacy_MESSAGE_PRIVACY_STRANGERS_LIMITED:
			// A reply, or becoming contacts, lifts the limit.
			if replies == 0 && sent >= strangerLimit {
				return errStrangerLimit
			}
		}
	}
	if recipientBlocks {
		return errBlocked
	}
	return nil
}

// peerAs returns the peer of viewerID's direct conversation and the title
// the conversation has for viewerID: the remark they gave the peer as a
// contact, else the peer's display name.
func (s *messagesService) peerAs(ctx context.Context, viewerID, peerID string) (db.User, string, error) {
	peer, err := s.db.GetUser(ctx, peerID)
	if err != nil {
		return peer, "", err
	}
	remark, err := s.db.GetContactRemark(ctx, db.GetContactRemarkParams{UserID: viewerID, ContactID: peerID})
	switch {
	case db.IsNoRows(err) || err == nil && remark == "":
		return peer, peer.DisplayName, nil
	case err != nil:
		return peer, "", fmt.Errorf("get contact remark: %w", err)
	}
	return peer, remark, nil
}

// isUUID reports whether s is a UUID in its canonical text form, as
// PostgreSQL prints them.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case '0' <= r && r <= '9', 'a' <= r && r <= 'f', 'A' <= r && r <= 'F':
		default:
			return false
		}
	}
	return true
}
