package server

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// The account conversation is a user's private log, written by the server:
// what the user did on one device that their other devices must learn
// (friend requests and contacts, blocks, settings, messages deleted for
// themselves). Devices converge on it through Subscribe and Sync like on any
// other conversation, so nothing a device missed while offline is lost.

// createUser creates a user with their account conversation.
func createUser(ctx context.Context, d *db.DB, p db.CreateUserParams) (db.User, error) {
	var u db.User
	err := d.Tx(ctx, func(q *db.Queries) error {
		conv, err := q.CreateConversation(ctx, int16(parleyv1.ConversationKind_CONVERSATION_KIND_ACCOUNT))
		if err != nil {
			return fmt.Errorf("create account conversation: %w", err)
		}
		p.AccountConversationID = conv.ID
		if u, err = q.CreateUser(ctx, p); db.IsUniqueViolation(err, "users_username_key") {
			return errUsernameTaken
		} else if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		err = q.AddMember(ctx, db.AddMemberParams{
			ConversationID: conv.ID, UserID: u.ID, Role: int16(parleyv1.MemberRole_MEMBER_ROLE_MEMBER), JoinedSeq: 1,
		})
		if err != nil {
			return fmt.Errorf("join account conversation: %w", err)
		}
		return nil
	})
	return u, err
}

// appendAccountEntry appends a system entry to userID's account conversation
// in transaction q. Publish the returned event to the user after commit.
func appendAccountEntry(ctx context.Context, q *db.Queries, userID string, content *parleyv1.SystemContent) (*parleyv1.SubscribeResponse, error) {
	return appendAccountEntryBy(ctx, q, userID, userID, content)
}

// appendAccountEntryBy is appendAccountEntry for an entry about what actorID
// did, who becomes its sender (SystemContent names the user who acted that
// way). An entry another user caused, such as a friend request received,
// leaves the owner's read cursor where it was: it is news to every device.
// lockAccount takes userID's account conversation lock. A transaction that
// will append an account entry after changing member rows takes it first,
// in the order every other writer of the account log does (lock, then rows),
// so two of the user's requests cannot deadlock.
// It returns the account conversation's id.
func lockAccount(ctx context.Context, q *db.Queries, userID string) (string, error) {
	convID, err := q.GetAccountConversationID(ctx, userID)
	if err != nil {
		return "", fmt.Errorf("find account conversation: %w", err)
	}
	if _, err := q.LockConversation(ctx, convID); err != nil {
		return "", fmt.Errorf("lock account conversation: %w", err)
	}
	return convID, nil
}

func appendAccountEntryBy(ctx context.Context, q *db.Queries, userID, actorID string, content *parleyv1.SystemContent) (*parleyv1.SubscribeResponse, error) {
	convID, err := lockAccount(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	encoded, err := proto.Marshal(&parleyv1.Message{Content: &parleyv1.Message_System{System: content}})
	if err != nil {
		return nil, fmt.Errorf("encode account entry: %w", err)
	}
	entry, err := appendEntry(ctx, q, db.InsertMessageParams{
		ConversationID: convID, SenderID: &actorID, Kind: kindSystem, Content: encoded,
	})
	if err != nil {
		return nil, err
	}
	out, err := messageToProto(entry)
	if err != nil {
		return nil, err
	}
	return &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: out}}, nil
}
