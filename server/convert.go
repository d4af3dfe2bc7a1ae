package server

import (
	"time"

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
