package server

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func userToProto(u db.User) *parleyv1.User {
	out := &parleyv1.User{
		Id:          u.ID,
		Username:    u.Username,
		DisplayName: u.DisplayName,
		Bio:         u.Bio,
		CreateTime:  timestamp(u.CreatedAt),
	}
	if u.AvatarMediaID != nil {
		out.AvatarMediaId = *u.AvatarMediaID
	}
	return out
}

func privacyToProto(u db.User) *parleyv1.PrivacySettings {
	return &parleyv1.PrivacySettings{MessagePrivacy: parleyv1.MessagePrivacy(u.MessagePrivacy)}
}

func sessionToProto(s db.Session, currentID string) *parleyv1.Session {
	return &parleyv1.Session{
		Id:            s.ID,
		DeviceName:    s.DeviceName,
		Platform:      parleyv1.Platform(s.Platform),
		ClientAddress: s.ClientAddress,
		CreateTime:    timestamp(s.CreatedAt),
		LastUsedTime:  timestamp(s.LastUsedAt),
		Current:       s.ID == currentID,
	}
}

// messageToProto decodes a stored log entry. A recalled message keeps its
// place in the log but loses its content.
func messageToProto(m db.Message) (*parleyv1.Message, error) {
	out := &parleyv1.Message{}
	if m.RecalledAt == nil {
		if err := proto.Unmarshal(m.Content, out); err != nil {
			return nil, fmt.Errorf("decode message %s/%d: %w", m.ConversationID, m.Seq, err)
		}
		out.MentionUserIds = m.MentionUserIds
	}
	out.ConversationId = m.ConversationID
	out.Seq = m.Seq
	out.Id = m.ID
	if m.SenderID != nil {
		out.SenderId = *m.SenderID
	}
	if m.ClientMsgID != nil {
		out.ClientMsgId = *m.ClientMsgID
	}
	out.CreateTime = timestamp(m.CreatedAt)
	out.ReplyToSeq = m.ReplyToSeq
	out.Recalled = m.RecalledAt != nil
	return out, nil
}

func messagesToProto(rows []db.Message) ([]*parleyv1.Message, error) {
	out := make([]*parleyv1.Message, 0, len(rows))
	for _, r := range rows {
		m, err := messageToProto(r)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func friendRequestToProto(r db.FriendRequest, users map[string]db.User) *parleyv1.FriendRequest {
	return &parleyv1.FriendRequest{
		Id:         r.ID,
		FromUser:   userToProto(users[r.FromUserID]),
		ToUser:     userToProto(users[r.ToUserID]),
		Greeting:   r.Greeting,
		State:      parleyv1.FriendRequestState(r.State),
		CreateTime: timestamp(r.CreatedAt),
		UpdateTime: timestamp(r.UpdatedAt),
	}
}

// contactToProto is c as its owner sees it; u is the contact's profile.
func contactToProto(c db.Contact, u db.User) *parleyv1.Contact {
	return &parleyv1.Contact{User: userToProto(u), Remark: c.Remark, SinceTime: timestamp(c.CreatedAt)}
}

// blockedToProto is b as the blocker sees it; u is the blocked user's profile.
func blockedToProto(b db.Block, u db.User) *parleyv1.BlockedUser {
	return &parleyv1.BlockedUser{User: userToProto(u), BlockTime: timestamp(b.CreatedAt)}
}

func mediaToProto(m db.Medium) *parleyv1.Media {
	out := &parleyv1.Media{
		Id:          m.ID,
		Kind:        parleyv1.MediaKind(m.Kind),
		ContentType: m.ContentType,
		SizeBytes:   m.SizeBytes,
		Sha256:      m.Sha256,
		Width:       m.Width,
		Height:      m.Height,
		FileName:    m.FileName,
		State:       parleyv1.MediaState(m.State),
		UploaderId:  m.UploaderID,
		CreateTime:  timestamp(m.CreatedAt),
	}
	if m.DurationMs != nil {
		out.Duration = durationpb.New(time.Duration(*m.DurationMs) * time.Millisecond)
	}
	if m.ThumbnailMediaID != nil {
		out.ThumbnailMediaId = *m.ThumbnailMediaID
	}
	return out
}
