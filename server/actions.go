package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// maxPinned is how many conversations a user may pin.
const maxPinned = 20

// Recall withdraws a message: its content is cleared for everyone and a new
// log entry records the recall, so every client converges through the log.
func (s *messagesService) Recall(ctx context.Context, req *parleyv1.RecallRequest) (*parleyv1.RecallResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var (
		entry      db.Message
		recipients []string
	)
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		conv, err := q.LockConversation(ctx, req.GetConversationId())
		if db.IsNoRows(err) {
			return errConversationNotFound
		} else if err != nil {
			return fmt.Errorf("lock conversation: %w", err)
		}
		me, err := q.GetMembership(ctx, db.GetMembershipParams{ConversationID: req.GetConversationId(), UserID: c.UserID})
		if db.IsNoRows(err) {
			return errConversationNotFound
		}
		if err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		if me.LeftSeq != nil {
			return errNotMember
		}
		if conv.Kind == kindGroup {
			// A recall is a new entry, and a dissolved group's log is closed.
			g, err := q.GetGroup(ctx, conv.ID)
			if err != nil {
				return fmt.Errorf("get group: %w", err)
			}
			if g.Group.DissolvedAt != nil {
				return errGroupDissolved
			}
		}
		if lo, hi := visibleRange(me); req.GetSeq() < lo || req.GetSeq() > hi {
			return errMessageNotFound
		}
		target, err := q.GetMessage(ctx, db.GetMessageParams{ConversationID: me.ConversationID, Seq: req.GetSeq()})
		if db.IsNoRows(err) {
			return errMessageNotFound
		}
		if err != nil {
			return fmt.Errorf("get message: %w", err)
		}
		switch {
		case target.Kind == kindSystem:
			return errRecallSystem
		case target.SenderID == nil || *target.SenderID != c.UserID:
			return errRecallNotSender
		case target.RecalledAt != nil:
			return errAlreadyRecalled
		case time.Since(target.CreatedAt) > s.cfg.RecallWindow:
			return errRecallTooLate
		}
		if err := q.MarkRecalled(ctx, db.MarkRecalledParams{ConversationID: me.ConversationID, Seq: target.Seq}); err != nil {
			return fmt.Errorf("mark recalled: %w", err)
		}
		content, err := proto.Marshal(&parleyv1.Message{Content: &parleyv1.Message_System{System: &parleyv1.SystemContent{
			Event: &parleyv1.SystemContent_Recall{Recall: &parleyv1.MessageRecalled{Seq: target.Seq}},
		}}})
		if err != nil {
			return fmt.Errorf("encode recall: %w", err)
		}
		entry, err = appendEntry(ctx, q, db.InsertMessageParams{
			ConversationID: me.ConversationID, SenderID: &c.UserID, Kind: kindSystem, Content: content,
		})
		if err != nil {
			return err
		}
		recipients, err = currentMembers(ctx, q, me.ConversationID)
		return err
	})
	if err != nil {
		return nil, err
	}
	out, err := messageToProto(entry)
	if err != nil {
		return nil, err
	}
	s.hub.publish(recipients, "", &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: out}})
	return &parleyv1.RecallResponse{Recall: out}, nil
}

// currentMembers returns the user ids of a conversation's current members.
func currentMembers(ctx context.Context, q *db.Queries, convID string) ([]string, error) {
	members, err := q.ListConversationMembers(ctx, convID)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	ids := make([]string, 0, len(members))
	for _, m := range members {
		if m.LeftSeq == nil {
			ids = append(ids, m.UserID)
		}
	}
	return ids, nil
}

// SendTyping relays a typing indicator to the other members' open streams.
// It is never stored.
func (s *messagesService) SendTyping(ctx context.Context, req *parleyv1.SendTypingRequest) (*parleyv1.SendTypingResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.membership(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	// Typing reaches the others as a message does, so the rules of sending
	// decide it: a blocked user, a muted member, a dissolved group (where
	// nobody can answer, so nobody is typing) are refused.
	cs, err := admissionState(ctx, s.db.Queries, m.ConversationID, m.Kind, m.LastSeq)
	if err != nil {
		return nil, err
	}
	if _, err := admitSender(c.UserID, cs); err != nil {
		return nil, err
	}
	// Starts are throttled per user and conversation, silently: a client that
	// reports every keystroke still costs one event per interval. Stops always
	// pass, so an indicator never sticks.
	if req.GetTyping() {
		if ok, _ := s.typing.allow(c.UserID+"/"+m.ConversationID, time.Now()); !ok {
			return &parleyv1.SendTypingResponse{}, nil
		}
	}
	others := slices.DeleteFunc(cs.currentMembers(), func(id string) bool { return id == c.UserID })
	s.hub.publish(others, "", &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Typing{Typing: &parleyv1.TypingEvent{
		ConversationId: m.ConversationID, UserId: c.UserID, Typing: req.GetTyping(),
	}}})
	return &parleyv1.SendTypingResponse{}, nil
}

// UpdateConversationSettings mutes or pins a conversation for the caller and
// tells the caller's other devices.
func (s *messagesService) UpdateConversationSettings(ctx context.Context, req *parleyv1.UpdateConversationSettingsRequest) (*parleyv1.UpdateConversationSettingsResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	var entry *parleyv1.SubscribeResponse
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if _, err := lockAccount(ctx, q, c.UserID); err != nil {
			return err
		}
		m, err := q.GetMembership(ctx, db.GetMembershipParams{ConversationID: req.GetConversationId(), UserID: c.UserID})
		if db.IsNoRows(err) {
			return errConversationNotFound
		}
		if err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		if req.GetPinned() && m.PinnedAt == nil {
			n, err := q.CountPinned(ctx, c.UserID)
			if err != nil {
				return fmt.Errorf("count pinned: %w", err)
			}
			if n >= maxPinned {
				return errTooManyPinned
			}
		}
		err = q.UpdateMemberSettings(ctx, db.UpdateMemberSettingsParams{
			ConversationID: m.ConversationID, UserID: c.UserID, Muted: req.Muted, Pinned: req.Pinned,
		})
		if err != nil {
			return fmt.Errorf("update settings: %w", err)
		}
		if m, err = q.GetMembership(ctx, db.GetMembershipParams{ConversationID: m.ConversationID, UserID: c.UserID}); err != nil {
			return fmt.Errorf("get membership: %w", err)
		}
		entry, err = appendAccountEntry(ctx, q, c.UserID, &parleyv1.SystemContent{Event: &parleyv1.SystemContent_SettingsChanged{
			SettingsChanged: &parleyv1.SettingsChanged{Setting: &parleyv1.SettingsChanged_Conversation{Conversation: &parleyv1.ConversationSettings{
				ConversationId: m.ConversationID, Muted: m.Muted, Pinned: m.PinnedAt != nil,
			}}},
		}})
		return err
	})
	if err != nil {
		return nil, err
	}
	conv, err := s.conversation(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	s.hub.publishAll([]hubEvent{
		{users: []string{c.UserID}, skip: c.SessionID, ev: conversationUpdated(conv)},
		{users: []string{c.UserID}, ev: entry},
	})
	return &parleyv1.UpdateConversationSettingsResponse{Conversation: conv}, nil
}

// DeleteForMe hides entries from the caller only: listed seqs, or the whole
// history up to a seq. The caller's other devices get the new state at once.
func (s *messagesService) DeleteForMe(ctx context.Context, req *parleyv1.DeleteForMeRequest) (*parleyv1.DeleteForMeResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.membership(ctx, c.UserID, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	record := &parleyv1.MessagesDeleted{ConversationId: m.ConversationID}
	if up := req.GetUpToSeq(); up != 0 {
		if up > m.VisibleLastSeq {
			return nil, invalidArgument("up_to_seq", "parley.seq_in_log", "must not be beyond the conversation's last_seq")
		}
		record.ClearedSeq = up
	} else {
		lo, hi := visibleRange(m)
		for _, seq := range req.GetSeqs() {
			if seq > m.VisibleLastSeq {
				return nil, invalidArgument("seqs", "parley.seq_in_log", "must not be beyond the conversation's last_seq")
			}
			if seq >= lo && seq <= hi { // seqs the caller cannot see are skipped
				record.Seqs = append(record.Seqs, seq)
			}
		}
	}
	var entry *parleyv1.SubscribeResponse
	err = s.db.Tx(ctx, func(q *db.Queries) error {
		if _, err := lockAccount(ctx, q, c.UserID); err != nil {
			return err
		}
		var err error
		if record.ClearedSeq != 0 {
			err = q.ClearHistory(ctx, db.ClearHistoryParams{ConversationID: m.ConversationID, UserID: c.UserID, Seq: record.ClearedSeq})
		} else {
			err = q.DeleteForUser(ctx, db.DeleteForUserParams{UserID: c.UserID, ConversationID: m.ConversationID, Seqs: record.Seqs})
		}
		if err != nil {
			return fmt.Errorf("delete for me: %w", err)
		}
		// The caller's other devices learn of it through the account log.
		entry, err = appendAccountEntry(ctx, q, c.UserID, &parleyv1.SystemContent{
			Event: &parleyv1.SystemContent_MessagesDeleted{MessagesDeleted: record},
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	conv, err := s.conversation(ctx, c.UserID, m.ConversationID)
	if err != nil {
		return nil, err
	}
	s.hub.publishAll([]hubEvent{
		{users: []string{c.UserID}, skip: c.SessionID, ev: conversationUpdated(conv)},
		{users: []string{c.UserID}, ev: entry},
	})
	return &parleyv1.DeleteForMeResponse{Conversation: conv}, nil
}
