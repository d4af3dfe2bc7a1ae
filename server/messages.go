package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// strangerLimit is how many messages a non-contact may send to a user whose
// privacy is "strangers limited" before that user replies.
const strangerLimit = 3

// message kinds as stored in messages.kind.
const (
	kindText int16 = iota + 1
	kindImage
	kindVoice
	kindVideo
	kindFile
	kindSystem
)

// messagesService implements parley.v1.MessagesService.
type messagesService struct {
	parleyv1connect.UnimplementedMessagesServiceHandler

	db       *db.DB
	hub      *hub
	tokens   *tokens
	presence *presence
	cfg      Config
	appends  *committer
	sends    *keyedLimiter
	typing   *keyedLimiter
	heartbt  time.Duration
}

func newMessagesService(d *db.DB, h *hub, t *tokens, p *presence, c *committer, cfg Config) *messagesService {
	return &messagesService{
		appends:  c,
		presence: p,
		db:       d,
		hub:      h,
		tokens:   t,
		cfg:      cfg,
		sends:    newKeyedLimiter(cfg.SendPerUser, 100_000),
		typing:   newKeyedLimiter(Rate{Burst: 1, Per: 2 * time.Second}, 100_000),
		heartbt:  cfg.HeartbeatInterval,
	}
}

func (s *messagesService) Send(ctx context.Context, req *parleyv1.SendRequest) (*parleyv1.SendResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	if ok, wait := s.sends.allow(c.UserID, time.Now()); !ok {
		return nil, resourceExhausted("sending too fast; slow down", wait)
	}
	kind, content, media, err := s.messageContent(ctx, c.UserID, req)
	if err != nil {
		return nil, err
	}
	convID := req.GetConversationId()
	if peer := req.GetUserId(); peer != "" {
		if convID, err = s.directConversation(ctx, c.UserID, peer); err != nil {
			return nil, err
		}
	}
	r, err := s.appends.append(ctx, &pendingSend{
		senderID: c.UserID,
		convID:   convID,
		req:      req,
		kind:     kind,
		content:  content,
		media:    media,
	})
	if err != nil {
		return nil, err
	}
	out := r.msg
	return &parleyv1.SendResponse{
		ConversationId: out.GetConversationId(),
		Seq:            out.GetSeq(),
		MessageId:      out.GetId(),
		CreateTime:     out.GetCreateTime(),
		Message:        out,
	}, nil
}

// appendEntry adds an entry to a conversation's log. The caller holds the
// conversation's lock (LockConversation) in the same transaction, so the seq
// it allocates is the next without gaps, and commits or rolls back with the
// entry. A user's entry advances their read cursor.
func appendEntry(ctx context.Context, q *db.Queries, p db.InsertMessageParams) (db.Message, error) {
	pos, err := q.AllocateSeq(ctx, p.ConversationID)
	if err != nil {
		return db.Message{}, fmt.Errorf("allocate seq: %w", err)
	}
	p.Seq, p.CreatedAt = pos.LastSeq, pos.LastMessageAt
	if p.MentionUserIds == nil {
		p.MentionUserIds = []string{}
	}
	msg, err := q.InsertMessage(ctx, p)
	if err != nil {
		return db.Message{}, fmt.Errorf("insert message: %w", err)
	}
	if p.SenderID != nil {
		if err := q.MarkSent(ctx, db.MarkSentParams{ConversationID: p.ConversationID, UserID: *p.SenderID, Seq: msg.Seq}); err != nil {
			return db.Message{}, fmt.Errorf("advance sender's read cursor: %w", err)
		}
	}
	return msg, nil
}

// admit applies the rules a message must pass: the sender may write in the
// conversation (admitSender), and replies and mentions point inside it. It
// returns the sender's index in cs.members.
func admit(senderID string, cs *conversationState, req *parleyv1.SendRequest) (int, error) {
	i, err := admitSender(senderID, cs)
	if err != nil {
		return 0, err
	}
	members, me := cs.members, cs.members[i]
	if r := req.GetReplyToSeq(); r != 0 && (r < me.JoinedSeq || r <= me.ClearedSeq || r > cs.lastSeq) {
		return 0, invalidArgument("reply_to_seq", "parley.reply_in_view", "must be a message of this conversation you can see")
	}
	if len(req.GetMentionUserIds()) > 0 {
		if cs.kind != int16(parleyv1.ConversationKind_CONVERSATION_KIND_GROUP) {
			return 0, invalidArgument("mention_user_ids", "parley.mentions_in_groups", "mentions are for group conversations only")
		}
		for _, id := range req.GetMentionUserIds() {
			if !slices.ContainsFunc(members, func(m db.ListMembersForAppendRow) bool { return m.UserID == id && m.LeftSeq == nil }) {
				return 0, invalidArgument("mention_user_ids", "parley.mention_members", "must name current members of the group")
			}
		}
	}
	return i, nil
}

// admitSender decides whether a user may cause anything the other members
// of a conversation receive: a message, a typing indicator, a call. The
// sender is a current member, the account conversation is the server's, a
// group's rules (dissolved, muted) hold, and in a direct conversation
// neither blocked the other and the recipient's privacy setting lets the
// sender in. It returns the sender's index in cs.members.
func admitSender(senderID string, cs *conversationState) (int, error) {
	members := cs.members
	i := slices.IndexFunc(members, func(m db.ListMembersForAppendRow) bool { return m.UserID == senderID })
	if i < 0 {
		return 0, errConversationNotFound
	}
	me := members[i]
	if me.LeftSeq != nil {
		return 0, errNotMember
	}
	switch cs.kind {
	case int16(parleyv1.ConversationKind_CONVERSATION_KIND_ACCOUNT):
		return 0, errAccountConversation
	case kindGroup:
		if err := admitToGroup(me, time.Now()); err != nil {
			return 0, err
		}
	case int16(parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT):
		for _, peer := range members {
			if peer.UserID == senderID {
				continue
			}
			err := directRule(peer.MessagePrivacy, peer.HasPeerAsContact, me.BlocksPeer, peer.BlocksPeer, me.SentCount, peer.SentCount)
			if err != nil {
				return 0, err
			}
		}
	}
	return i, nil
}

// admissionState reads what admitSender needs of one conversation: its
// members with the inputs of the rules. Under the conversation's lock it is
// exact; without it, a snapshot good enough for what is never stored.
func admissionState(ctx context.Context, q *db.Queries, convID string, kind int16, lastSeq int64) (*conversationState, error) {
	cs := &conversationState{kind: kind, lastSeq: lastSeq}
	if kind == kindGroup {
		rows, err := q.ListGroupMembersForAppend(ctx, []string{convID})
		if err != nil {
			return nil, fmt.Errorf("list group members: %w", err)
		}
		cs.members = groupRows(rows)
		return cs, nil
	}
	var err error
	if cs.members, err = q.ListMembersForAppend(ctx, []string{convID}); err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return cs, nil
}

// admitToGroup applies a group's rules to its sender: a dissolved group is
// read-only, mute_all leaves the floor to the owner and admins, and a muted
// member waits for the mute to end. The batch read them under the
// conversation's lock, which every group change takes.
func admitToGroup(me db.ListMembersForAppendRow, now time.Time) error {
	switch {
	case me.DissolvedAt != nil:
		return errGroupDissolved
	case me.MuteAll != nil && *me.MuteAll && me.Role > roleAdmin:
		return errMutedAll
	case me.MuteUntil != nil && now.Before(*me.MuteUntil):
		return errMutedInGroup
	}
	return nil
}

// messageContent encodes the content of a Send for storage, with the media
// it refers to.
func (s *messagesService) messageContent(ctx context.Context, senderID string, req *parleyv1.SendRequest) (int16, []byte, []string, error) {
	var id string
	var want parleyv1.MediaKind
	switch content := req.GetContent().(type) {
	case *parleyv1.SendRequest_Image:
		id, want = content.Image.GetMediaId(), parleyv1.MediaKind_MEDIA_KIND_IMAGE
	case *parleyv1.SendRequest_Voice:
		id, want = content.Voice.GetMediaId(), parleyv1.MediaKind_MEDIA_KIND_VOICE
	case *parleyv1.SendRequest_Video:
		id, want = content.Video.GetMediaId(), parleyv1.MediaKind_MEDIA_KIND_VIDEO
	case *parleyv1.SendRequest_File:
		id, want = content.File.GetMediaId(), parleyv1.MediaKind_MEDIA_KIND_FILE
	default:
		kind, b, err := sendContent(req)
		return kind, b, nil, err
	}
	m, err := s.sendableMedia(ctx, senderID, id, want)
	if err != nil {
		return 0, nil, nil, err
	}
	// A ready media never changes, so what is read here is what the
	// message keeps.
	stored, kind := mediaMessage(m)
	b, err := proto.Marshal(stored)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("encode content: %w", err)
	}
	refs := []string{m.ID}
	if m.ThumbnailMediaID != nil {
		refs = append(refs, *m.ThumbnailMediaID)
	}
	return kind, b, refs, nil
}

// sendableMedia returns the media a Send names after checking that the
// sender uploaded it, it is complete, and it is of the content's kind.
func (s *messagesService) sendableMedia(ctx context.Context, senderID, id string, want parleyv1.MediaKind) (db.Medium, error) {
	m, err := s.db.GetMedia(ctx, id)
	if db.IsNoRows(err) {
		return m, errMediaNotFound
	}
	if err != nil {
		return m, fmt.Errorf("get media: %w", err)
	}
	if m.UploaderID != senderID {
		visible, err := s.db.MediaVisible(ctx, db.MediaVisibleParams{MediaID: id, UserID: senderID})
		if err != nil {
			return m, fmt.Errorf("check media access: %w", err)
		}
		if !visible {
			return m, errMediaNotFound
		}
		return m, errMediaNotYours
	}
	if m.State != mediaReady {
		return m, errMediaNotReady
	}
	if got := parleyv1.MediaKind(m.Kind); got != want {
		return m, invalidArgument("content", "parley.media_kind", fmt.Sprintf("media %s is of kind %s; send it as that kind of content", id, got))
	}
	return m, nil
}

// mediaMessage is the stored content of a message carrying m.
func mediaMessage(m db.Medium) (*parleyv1.Message, int16) {
	var duration *durationpb.Duration
	if m.DurationMs != nil {
		duration = durationpb.New(time.Duration(*m.DurationMs) * time.Millisecond)
	}
	var thumb string
	if m.ThumbnailMediaID != nil {
		thumb = *m.ThumbnailMediaID
	}
	switch parleyv1.MediaKind(m.Kind) {
	case parleyv1.MediaKind_MEDIA_KIND_IMAGE:
		return &parleyv1.Message{Content: &parleyv1.Message_Image{Image: &parleyv1.ImageContent{
			MediaId: m.ID, ContentType: m.ContentType, SizeBytes: m.SizeBytes, Width: m.Width, Height: m.Height, ThumbnailMediaId: thumb,
		}}}, kindImage
	case parleyv1.MediaKind_MEDIA_KIND_VOICE:
		return &parleyv1.Message{Content: &parleyv1.Message_Voice{Voice: &parleyv1.VoiceContent{
			MediaId: m.ID, ContentType: m.ContentType, SizeBytes: m.SizeBytes, Duration: duration,
		}}}, kindVoice
	case parleyv1.MediaKind_MEDIA_KIND_VIDEO:
		return &parleyv1.Message{Content: &parleyv1.Message_Video{Video: &parleyv1.VideoContent{
			MediaId: m.ID, ContentType: m.ContentType, SizeBytes: m.SizeBytes, Width: m.Width, Height: m.Height,
			Duration: duration, ThumbnailMediaId: thumb,
		}}}, kindVideo
	default:
		return &parleyv1.Message{Content: &parleyv1.Message_File{File: &parleyv1.FileContent{
			MediaId: m.ID, ContentType: m.ContentType, SizeBytes: m.SizeBytes, FileName: m.FileName,
		}}}, kindFile
	}
}

// sendContent encodes the text content of a Send for storage.
func sendContent(req *parleyv1.SendRequest) (int16, []byte, error) {
	var stored parleyv1.Message
	var kind int16
	switch content := req.GetContent().(type) {
	case *parleyv1.SendRequest_Text:
		stored.Content = &parleyv1.Message_Text{Text: content.Text}
		kind = kindText
	default:
		return 0, nil, invalidArgument("content", "parley.content_required", "a message needs content")
	}
	b, err := proto.Marshal(&stored)
	if err != nil {
		return 0, nil, fmt.Errorf("encode content: %w", err)
	}
	return kind, b, nil
}

// directConversation returns the direct conversation of two users, creating
// it on first use. Two first messages racing create one conversation.
func (s *messagesService) directConversation(ctx context.Context, me, peer string) (string, error) {
	low, high := min(me, peer), max(me, peer)
	id, err := s.db.GetDirectConversationID(ctx, db.GetDirectConversationIDParams{UserLow: low, UserHigh: high})
	if err == nil {
		return id, nil
	}
	if !db.IsNoRows(err) {
		return "", fmt.Errorf("look up direct conversation: %w", err)
	}
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		// A conversation the recipient would refuse every message in is not
		// created: they would see an empty conversation from a stranger, or
		// from someone one of them blocked.
		if err := directAdmission(ctx, q, me, peer); err != nil {
			return err
		}
		conv, err := q.CreateConversation(ctx, int16(parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT))
		if err != nil {
			return fmt.Errorf("create conversation: %w", err)
		}
		id, err = q.InsertDirectPair(ctx, db.InsertDirectPairParams{UserLow: low, UserHigh: high, ConversationID: conv.ID})
		if db.IsNoRows(err) {
			return errLostRace
		}
		if err != nil {
			return fmt.Errorf("claim direct pair: %w", err)
		}
		for _, u := range []string{low, high} {
			if err := q.AddMember(ctx, db.AddMemberParams{ConversationID: conv.ID, UserID: u, Role: int16(parleyv1.MemberRole_MEMBER_ROLE_MEMBER), JoinedSeq: 1}); err != nil {
				return fmt.Errorf("add member: %w", err)
			}
		}
		return nil
	})
	if errors.Is(err, errLostRace) {
		// The other user's first message created it: use theirs.
		return s.db.GetDirectConversationID(ctx, db.GetDirectConversationIDParams{UserLow: low, UserHigh: high})
	}
	return id, err
}

// directAdmission applies the rules of a first direct message from me to
// peer: NotFound for a user who does not exist, PermissionDenied when either
// blocked the other or peer takes messages from contacts only. The refusal
// is the one Send would give, so it reveals nothing Send does not.
func directAdmission(ctx context.Context, q *db.Queries, me, peer string) error {
	if peer == me {
		return invalidArgument("user_id", "parley.not_self", "cannot start a direct conversation with yourself")
	}
	recipient, err := q.GetUser(ctx, peer)
	if db.IsNoRows(err) {
		return errUserNotFound
	}
	if err != nil {
		return fmt.Errorf("get peer: %w", err)
	}
	rel, err := q.GetRelationship(ctx, db.GetRelationshipParams{UserID: peer, OtherID: me})
	if err != nil {
		return fmt.Errorf("get relationship: %w", err)
	}
	return directRule(recipient.MessagePrivacy, rel.IsContact, rel.BlockedByOther, rel.BlocksOther, 0, 0)
}

func (s *messagesService) CreateDirectConversation(ctx context.Context, req *parleyv1.CreateDirectConversationRequest) (*parleyv1.CreateDirectConversationResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	// The rules apply to a conversation that exists as to a new one: a user
	// blocked, or kept out by friends-only, is not handed the conversation.
	if err := directAdmission(ctx, s.db.Queries, c.UserID, req.GetUserId()); err != nil {
		return nil, err
	}
	id, err := s.directConversation(ctx, c.UserID, req.GetUserId())
	if err != nil {
		return nil, err
	}
	conv, err := s.conversation(ctx, c.UserID, id)
	if err != nil {
		return nil, err
	}
	return &parleyv1.CreateDirectConversationResponse{Conversation: conv}, nil
}

func (s *messagesService) GetConversation(ctx context.Context, req *parleyv1.GetConversationRequest) (*parleyv1.GetConversationResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	conv, err := s.conversation(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	return &parleyv1.GetConversationResponse{Conversation: conv}, nil
}

// membership returns the caller's place in a conversation. A conversation
// the caller never belonged to is NotFound, whether or not it exists.
func (s *messagesService) membership(ctx context.Context, userID, convID string) (db.Membership, error) {
	m, err := s.db.GetMembership(ctx, db.GetMembershipParams{ConversationID: convID, UserID: userID})
	if db.IsNoRows(err) {
		return m, errConversationNotFound
	}
	if err != nil {
		return m, fmt.Errorf("get membership: %w", err)
	}
	return m, nil
}

func (s *messagesService) conversation(ctx context.Context, userID, convID string) (*parleyv1.Conversation, error) {
	m, err := s.membership(ctx, userID, convID)
	if err != nil {
		return nil, err
	}
	return s.conversationView(ctx, m)
}

// conversationView builds the caller's view of a conversation from their
// membership: peer, preview, unread count and the others' read cursors.
func (s *messagesService) conversationView(ctx context.Context, m db.Membership) (*parleyv1.Conversation, error) {
	out := &parleyv1.Conversation{
		Id:          m.ConversationID,
		Kind:        parleyv1.ConversationKind(m.Kind),
		LastSeq:     m.VisibleLastSeq,
		ReadSeq:     m.ReadSeq,
		JoinedSeq:   m.JoinedSeq,
		ClearedSeq:  m.ClearedSeq,
		UnreadCount: max(m.VisibleLastSeq-m.ReadSeq, 0),
		Muted:       m.Muted,
		Pinned:      m.PinnedAt != nil,
		Membership:  parleyv1.MembershipState_MEMBERSHIP_STATE_ACTIVE,
		CreateTime:  timestamp(m.CreatedAt),
		UpdateTime:  timestamp(m.LastMessageAt),
	}
	if m.LeftSeq != nil {
		out.Membership = parleyv1.MembershipState_MEMBERSHIP_STATE_LEFT
	} else if m.Kind != int16(parleyv1.ConversationKind_CONVERSATION_KIND_ACCOUNT) {
		call, err := s.db.GetActiveCall(ctx, m.ConversationID)
		if err == nil {
			out.ActiveCallId = call.ID
		} else if !db.IsNoRows(err) {
			return nil, fmt.Errorf("get active call: %w", err)
		}
	}
	if out.Kind == parleyv1.ConversationKind_CONVERSATION_KIND_GROUP {
		if err := s.groupView(ctx, m, out); err != nil {
			return nil, err
		}
	} else if err := s.peerView(ctx, m, out); err != nil {
		return nil, err
	}
	if last := m.VisibleLastSeq; last > 0 && last > m.ClearedSeq && last >= m.JoinedSeq {
		row, err := s.db.GetMessage(ctx, db.GetMessageParams{ConversationID: m.ConversationID, Seq: last})
		if err != nil {
			return nil, fmt.Errorf("get last message: %w", err)
		}
		last, err := s.userMessages(ctx, m.UserID, []db.Message{row})
		if err != nil {
			return nil, err
		}
		out.LastMessage = last[0]
	}
	return out, nil
}

// groupView fills in what a group conversation shows its member. A former
// member learns nothing after leaving: the group's name and picture stay as
// they were, and the others' count and read cursors are not theirs to see.
func (s *messagesService) groupView(ctx context.Context, m db.Membership, out *parleyv1.Conversation) error {
	g, err := s.db.GroupView(ctx, db.GroupViewParams{ConversationID: m.ConversationID, UserID: m.UserID})
	if err != nil {
		return fmt.Errorf("get group view: %w", err)
	}
	out.GroupId, out.Title, out.AvatarMediaId = m.ConversationID, g.Name, g.AvatarMediaID
	if m.LeftSeq != nil {
		if g.Removed {
			out.Membership = parleyv1.MembershipState_MEMBERSHIP_STATE_REMOVED
		}
		return nil
	}
	if g.DissolvedAt != nil {
		out.Membership = parleyv1.MembershipState_MEMBERSHIP_STATE_DISSOLVED
	}
	out.MemberCount, out.PeerReadSeq = g.MemberCount, g.PeerReadSeq
	return nil
}

// peerView fills in the member count and the peer of a direct (or account)
// conversation.
func (s *messagesService) peerView(ctx context.Context, m db.Membership, out *parleyv1.Conversation) error {
	members, err := s.db.ListConversationMembers(ctx, m.ConversationID)
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	peerRead := int64(-1)
	for _, other := range members {
		if other.LeftSeq != nil {
			continue
		}
		out.MemberCount++
		if other.UserID == m.UserID {
			continue
		}
		if peerRead < 0 || other.ReadSeq < peerRead {
			peerRead = other.ReadSeq
		}
		if out.Kind == parleyv1.ConversationKind_CONVERSATION_KIND_DIRECT {
			peer, title, err := s.peerAs(ctx, m.UserID, other.UserID)
			if err != nil {
				return fmt.Errorf("get peer: %w", err)
			}
			out.Peer = userToProto(peer)
			out.Title = title
			if peer.AvatarMediaID != nil {
				out.AvatarMediaId = *peer.AvatarMediaID
			}
		}
	}
	out.PeerReadSeq = max(peerRead, 0)
	return nil
}

const (
	defaultListMessages      = 50
	defaultListConversations = 50
	latestPageOnSubscribe    = 20
)

func (s *messagesService) ListMessages(ctx context.Context, req *parleyv1.ListMessagesRequest) (*parleyv1.ListMessagesResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.membership(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = defaultListMessages
	}
	lo, hi := visibleRange(m)
	var rows []db.Message
	if req.Position != nil && req.GetBeforeSeq() == 0 {
		rows, err = s.db.ListMessagesAfter(ctx, db.ListMessagesAfterParams{
			ConversationID: m.ConversationID, AfterSeq: max(req.GetAfterSeq(), lo-1), UntilSeq: hi, MaxRows: int32(limit + 1),
		})
	} else {
		before := hi + 1
		if b := req.GetBeforeSeq(); b != 0 {
			before = min(b, before)
		}
		rows, err = s.db.ListMessagesBefore(ctx, db.ListMessagesBeforeParams{
			ConversationID: m.ConversationID, BeforeSeq: before, FromSeq: lo, MaxRows: int32(limit + 1),
		})
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		slices.Reverse(rows)
		if len(rows) > limit {
			return s.messagesPage(ctx, c.UserID, rows[1:], true) // the extra row is the oldest
		}
		return s.messagesPage(ctx, c.UserID, rows, false)
	}
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	if len(rows) > limit {
		return s.messagesPage(ctx, c.UserID, rows[:limit], true)
	}
	return s.messagesPage(ctx, c.UserID, rows, false)
}

func (s *messagesService) messagesPage(ctx context.Context, userID string, rows []db.Message, more bool) (*parleyv1.ListMessagesResponse, error) {
	msgs, err := s.userMessages(ctx, userID, rows)
	if err != nil {
		return nil, err
	}
	return &parleyv1.ListMessagesResponse{Messages: msgs, HasMore: more}, nil
}

// userMessages converts consecutive entries of one conversation as userID
// sees them: entries they deleted for themselves keep their place, marked
// deleted, without content.
func (s *messagesService) userMessages(ctx context.Context, userID string, rows []db.Message) ([]*parleyv1.Message, error) {
	msgs, err := messagesToProto(rows)
	if err != nil || len(rows) == 0 {
		return msgs, err
	}
	deleted, err := s.db.DeletedSeqs(ctx, db.DeletedSeqsParams{
		UserID: userID, ConversationID: rows[0].ConversationID, FromSeq: rows[0].Seq, ToSeq: rows[len(rows)-1].Seq,
	})
	if err != nil {
		return nil, fmt.Errorf("read deleted messages: %w", err)
	}
	for _, m := range msgs {
		if slices.Contains(deleted, m.GetSeq()) {
			markDeleted(m)
		}
	}
	return msgs, nil
}

// markDeleted shows an entry as deleted for its reader: in place, without
// content, including content fields a newer build stored that this one
// decodes as unknown.
func markDeleted(m *parleyv1.Message) {
	m.Content, m.MentionUserIds, m.Deleted = nil, nil, true
	m.ProtoReflect().SetUnknown(nil)
}

// visibleRange is the seqs a member may read: lo ≤ seq ≤ hi.
func visibleRange(m db.Membership) (lo, hi int64) {
	return max(m.JoinedSeq, m.ClearedSeq+1), m.VisibleLastSeq
}

func (s *messagesService) ListConversations(ctx context.Context, req *parleyv1.ListConversationsRequest) (*parleyv1.ListConversationsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = defaultListConversations
	}
	offset, err := pageOffset(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	rows, err := s.db.ListConversationPage(ctx, db.ListConversationPageParams{UserID: c.UserID, Limit: int32(size + 1), Offset: int32(offset)})
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", err)
	}
	res := &parleyv1.ListConversationsResponse{}
	if len(rows) > size {
		rows = rows[:size]
		res.NextPageToken = strconv.Itoa(offset + size)
	}
	for _, m := range rows {
		conv, err := s.conversationView(ctx, m)
		if err != nil {
			return nil, err
		}
		res.Conversations = append(res.Conversations, conv)
	}
	return res, nil
}

func (s *messagesService) MarkRead(ctx context.Context, req *parleyv1.MarkReadRequest) (*parleyv1.MarkReadResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.membership(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	readSeq, err := s.db.MarkRead(ctx, db.MarkReadParams{ConversationID: m.ConversationID, UserID: c.UserID, Seq: req.GetSeq()})
	if err != nil {
		return nil, fmt.Errorf("mark read: %w", err)
	}
	if readSeq > m.ReadSeq && m.LeftSeq == nil {
		to, err := currentMembers(ctx, s.db.Queries, m.ConversationID)
		if err != nil {
			return nil, err
		}
		s.hub.publish(to, c.SessionID, &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Read{Read: &parleyv1.ReadEvent{
			ConversationId: m.ConversationID, UserId: c.UserID, Seq: readSeq,
		}}})
	}
	return &parleyv1.MarkReadResponse{ReadSeq: readSeq, UnreadCount: max(m.VisibleLastSeq-readSeq, 0)}, nil
}

func (s *messagesService) GetReadReceipts(ctx context.Context, req *parleyv1.GetReadReceiptsRequest) (*parleyv1.GetReadReceiptsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.membership(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if m.LeftSeq != nil {
		// Who read what after the caller left is not theirs to know.
		return nil, errNotMember
	}
	if lo, hi := visibleRange(m); req.GetSeq() < lo || req.GetSeq() > hi {
		return nil, errMessageNotFound
	}
	msg, err := s.db.GetMessage(ctx, db.GetMessageParams{ConversationID: m.ConversationID, Seq: req.GetSeq()})
	if db.IsNoRows(err) {
		return nil, errMessageNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get message: %w", err)
	}
	if msg.SenderID == nil || *msg.SenderID != c.UserID {
		return nil, errReceiptsForSender
	}
	members, err := s.db.ListConversationMembers(ctx, m.ConversationID)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	res := &parleyv1.GetReadReceiptsResponse{}
	for _, other := range members {
		if other.LeftSeq != nil || other.UserID == c.UserID {
			continue
		}
		if other.ReadSeq >= req.GetSeq() {
			res.ReaderIds = append(res.ReaderIds, other.UserID)
		} else {
			res.UnreadMemberCount++
		}
	}
	return res, nil
}
