package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The error table: every failure a client can act on is one of these
// sentinels, mapped to its Connect code here and nowhere else. The sentinel's
// text is what the client sees, so it must make sense to a client developer.
var (
	errUsernameTaken     = errors.New("username is already taken")
	errBadCredentials    = errors.New("wrong username or password")
	errWrongPassword     = errors.New("current password is wrong")
	errSessionNotFound   = errors.New("session not found")
	errRefreshUnknown    = errors.New("refresh token is not valid")
	errRefreshExpired    = errors.New("refresh token has expired; log in again")
	errRefreshReused     = errors.New("refresh token was already used; the session has been revoked, log in again")
	errSessionRevoked    = errors.New("session has been revoked; log in again")
	errBadPageToken      = errors.New("page_token is not valid for this request")
	errUserNotFound      = errors.New("user not found")
	errTokenMissing      = errors.New("missing access token: send it as 'Authorization: Bearer <token>'")
	errTokenInvalid      = errors.New("access token is not valid")
	errTokenExpired      = errors.New("access token has expired; refresh it")
	errPasswordSameAsOld = errors.New("new_password must differ from current_password")

	errConversationNotFound = errors.New("conversation not found")
	errMessageNotFound      = errors.New("message not found")
	errNotMember            = errors.New("you are no longer a member of this conversation")
	errReceiptsForSender    = errors.New("read receipts are only for the sender of the message")
	errRecallNotSender      = errors.New("only the sender may recall this message")
	errRecallSystem         = errors.New("system messages cannot be recalled")
	errAlreadyRecalled      = errors.New("message is already recalled")
	errRecallTooLate        = errors.New("the time to recall this message has passed")
	errTooManyPinned        = errors.New("at most 20 conversations can be pinned; unpin one first")
	errAccountConversation  = errors.New("the account conversation is written by the server; nobody sends to it")
	errFriendsOnly          = errors.New("this user accepts direct messages from contacts only")
	errStrangerLimit        = errors.New("this user accepts at most 3 messages from people who are not their contacts until they reply")
	// errBlocked refuses a direct message the recipient blocked. Its text
	// does not say "blocked": the user blocked is not told why (see
	// ContactsService), only that this conversation is closed to them.
	errBlocked = errors.New("you cannot send direct messages to this user")
	// errYouBlocked is the blocker's own view of their block, which they
	// know of.
	errYouBlocked           = errors.New("you blocked this user; unblock them first")
	errAlreadyContacts      = errors.New("you are already contacts")
	errFriendRequestUnknown = errors.New("friend request not found")
	errFriendRequestSettled = errors.New("friend request is no longer pending")
	errNotContact           = errors.New("this user is not one of your contacts")
	errAddNotContact        = errors.New("you can add only your contacts to a group")
	errTooManyBlocked       = errors.New("you have blocked 10,000 users, the most there may be; unblock some first")
	errTooManyStreams       = errors.New("too many open streams for this user; close one first")
	errSlowSubscriber       = errors.New("stream fell behind and was closed; subscribe again with your cursors")
	errStreamSessionEnded   = errors.New("session has been revoked; log in again")
	// errShuttingDown answers Sends still queued when the server stops:
	// nothing of theirs was stored, and a retry with the same client message
	// id is safe.
	errShuttingDown = errors.New("server is shutting down; send again")
	// errLostRace is internal: a concurrent request created what we meant to.
	errLostRace = errors.New("lost a creation race")

	// Groups.
	errGroupNotFound      = errors.New("group not found")
	errNotGroupMember     = errors.New("you are no longer a member of this group")
	errGroupDissolved     = errors.New("the group was dissolved; it is read-only")
	errGroupFull          = errors.New("the group has reached its member limit")
	errTooManyAdmins      = errors.New("a group has at most 10 admins; make one a member first")
	errNotGroupOwner      = errors.New("only the group's owner may do this")
	errNotGroupAdmin      = errors.New("only the group's owner and admins may do this")
	errInvitesRestricted  = errors.New("only the group's owner and admins may invite to this group")
	errDoesNotOutrank     = errors.New("you may only act on members below your role: the owner on anyone, admins on ordinary members")
	errTargetNotMember    = errors.New("that user is not a member of this group")
	errTargetIsOwner      = errors.New("the owner's role changes only with TransferOwnership")
	errMutedAll           = errors.New("only the owner and admins may send in this group for now")
	errMutedInGroup       = errors.New("you are muted in this group; GetGroup shows until when")
	errInviteNotFound     = errors.New("invite code not found")
	errInviteExpired      = errors.New("this invite code has expired")
	errInviteRevoked      = errors.New("this invite code was revoked")
	errInviteUsedUp       = errors.New("this invite code has been used up")
	errInviteInactive     = errors.New("this invite code no longer works: its creator may no longer invite to the group")
	errTooManyInvites     = errors.New("a group has at most 20 usable invite codes; revoke one first")
	errRemovedFromGroup   = errors.New("you were removed from this group; a member must add you back")
	errMayNotRevokeInvite = errors.New("only the code's creator, the owner and admins may revoke it")

	// Media.
	errMediaNotFound     = errors.New("media not found")
	errMediaNotReady     = errors.New("media is not completed yet; upload its bytes and call CompleteUpload")
	errMediaNotYours     = errors.New("media: you may only send media you uploaded yourself")
	errThumbnailNotFound = errors.New("thumbnail_media_id: media not found among your uploads")
	errThumbnailUnfit    = errors.New("thumbnail_media_id: must be a completed image of at most 1 MiB")
	errAvatarNotFound    = errors.New("avatar_media_id: media not found among your uploads")
	errAvatarUnfit       = errors.New("avatar_media_id: must be a completed image")
	errUploadExpired     = errors.New("the upload has expired; create a new one")
	errUploadCompleting  = errors.New("the upload is being completed by another CompleteUpload; call again when it has returned")
	errNothingUploaded   = errors.New("nothing has been uploaded for this media; send its bytes to upload_url first")
	errUploadSize        = errors.New("the uploaded bytes are not the declared size_bytes; create a new upload")
	errUploadChecksum    = errors.New("the uploaded bytes do not match the declared sha256; create a new upload")
	errImageUndecodable  = errors.New("the uploaded image cannot be decoded; create a new upload")

	// Calls.
	errCallNotFound        = errors.New("call not found")
	errCallInProgress      = errors.New("a call is already in progress in this conversation; join it with AnswerCall")
	errInAnotherCall       = errors.New("you are already in another call; hang up first")
	errCalleeBusy          = errors.New("busy: the user you are calling is in another call")
	errCallEnded           = errors.New("the call has ended")
	errCallNotRinging      = errors.New("the call is no longer ringing")
	errAlreadyInCall       = errors.New("you are already in this call, perhaps on another device")
	errCallFull            = errors.New("the call is full")
	errNotInvited          = errors.New("you are not being rung for this call")
	errNotJoined           = errors.New("you have not joined this call; answer it first")
	errNoSignals           = errors.New("open Signals for this call first")
	errStaleAnswer         = errors.New("the answer's revision is not the outstanding offer's")
	errSignalsReplaced     = errors.New("another Signals stream for this call replaced this one")
	errSlowSignals         = errors.New("Signals stream fell behind and was closed; open it again")
	errCallNodeUnreachable = errors.New("the node hosting this call cannot be reached right now; retry")
	errCallMoved           = errors.New("this call's media moved to another node; open Signals again")

	// Database availability (heal). errDatabaseUnavailable answers any call
	// that failed because the database could not be reached (isUnavailable):
	// it is down or restarting, and a retry will succeed once it is back.
	errDatabaseUnavailable = errors.New("the database is unavailable right now; retry shortly")
)

var errorCodes = map[error]connect.Code{
	errUsernameTaken:     connect.CodeAlreadyExists,
	errBadCredentials:    connect.CodeUnauthenticated,
	errWrongPassword:     connect.CodeUnauthenticated,
	errSessionNotFound:   connect.CodeNotFound,
	errRefreshUnknown:    connect.CodeUnauthenticated,
	errRefreshExpired:    connect.CodeUnauthenticated,
	errRefreshReused:     connect.CodeUnauthenticated,
	errSessionRevoked:    connect.CodeUnauthenticated,
	errBadPageToken:      connect.CodeInvalidArgument,
	errUserNotFound:      connect.CodeNotFound,
	errTokenMissing:      connect.CodeUnauthenticated,
	errTokenInvalid:      connect.CodeUnauthenticated,
	errTokenExpired:      connect.CodeUnauthenticated,
	errPasswordSameAsOld: connect.CodeInvalidArgument,

	errConversationNotFound: connect.CodeNotFound,
	errMessageNotFound:      connect.CodeNotFound,
	errNotMember:            connect.CodePermissionDenied,
	errReceiptsForSender:    connect.CodePermissionDenied,
	errRecallNotSender:      connect.CodePermissionDenied,
	errRecallSystem:         connect.CodeFailedPrecondition,
	errAlreadyRecalled:      connect.CodeFailedPrecondition,
	errRecallTooLate:        connect.CodeFailedPrecondition,
	errTooManyPinned:        connect.CodeResourceExhausted,
	errAccountConversation:  connect.CodePermissionDenied,
	errFriendsOnly:          connect.CodePermissionDenied,
	errStrangerLimit:        connect.CodePermissionDenied,
	errBlocked:              connect.CodePermissionDenied,
	errYouBlocked:           connect.CodePermissionDenied,
	errAlreadyContacts:      connect.CodeAlreadyExists,
	errFriendRequestUnknown: connect.CodeNotFound,
	errFriendRequestSettled: connect.CodeFailedPrecondition,
	errNotContact:           connect.CodeNotFound,
	errAddNotContact:        connect.CodePermissionDenied,
	errTooManyBlocked:       connect.CodeResourceExhausted,
	errTooManyStreams:       connect.CodeResourceExhausted,
	errSlowSubscriber:       connect.CodeResourceExhausted,
	errShuttingDown:         connect.CodeUnavailable,
	errStreamSessionEnded:   connect.CodeUnauthenticated,

	errGroupNotFound:      connect.CodeNotFound,
	errNotGroupMember:     connect.CodePermissionDenied,
	errGroupDissolved:     connect.CodeFailedPrecondition,
	errGroupFull:          connect.CodeResourceExhausted,
	errTooManyAdmins:      connect.CodeResourceExhausted,
	errNotGroupOwner:      connect.CodePermissionDenied,
	errNotGroupAdmin:      connect.CodePermissionDenied,
	errInvitesRestricted:  connect.CodePermissionDenied,
	errDoesNotOutrank:     connect.CodePermissionDenied,
	errTargetNotMember:    connect.CodeNotFound,
	errTargetIsOwner:      connect.CodeFailedPrecondition,
	errMutedAll:           connect.CodePermissionDenied,
	errMutedInGroup:       connect.CodePermissionDenied,
	errInviteNotFound:     connect.CodeNotFound,
	errInviteExpired:      connect.CodeFailedPrecondition,
	errInviteRevoked:      connect.CodeFailedPrecondition,
	errInviteUsedUp:       connect.CodeFailedPrecondition,
	errInviteInactive:     connect.CodeFailedPrecondition,
	errTooManyInvites:     connect.CodeResourceExhausted,
	errRemovedFromGroup:   connect.CodePermissionDenied,
	errMayNotRevokeInvite: connect.CodePermissionDenied,

	errMediaNotFound:     connect.CodeNotFound,
	errMediaNotReady:     connect.CodeFailedPrecondition,
	errMediaNotYours:     connect.CodePermissionDenied,
	errThumbnailNotFound: connect.CodeNotFound,
	errThumbnailUnfit:    connect.CodeFailedPrecondition,
	errAvatarNotFound:    connect.CodeNotFound,
	errAvatarUnfit:       connect.CodeFailedPrecondition,
	errUploadExpired:     connect.CodeFailedPrecondition,
	errUploadCompleting:  connect.CodeFailedPrecondition,
	errNothingUploaded:   connect.CodeFailedPrecondition,
	errUploadSize:        connect.CodeFailedPrecondition,
	errUploadChecksum:    connect.CodeFailedPrecondition,
	errImageUndecodable:  connect.CodeFailedPrecondition,

	errCallNotFound:        connect.CodeNotFound,
	errCallInProgress:      connect.CodeAlreadyExists,
	errInAnotherCall:       connect.CodeFailedPrecondition,
	errCalleeBusy:          connect.CodeFailedPrecondition,
	errCallEnded:           connect.CodeFailedPrecondition,
	errCallNotRinging:      connect.CodeFailedPrecondition,
	errAlreadyInCall:       connect.CodeFailedPrecondition,
	errCallFull:            connect.CodeResourceExhausted,
	errNotInvited:          connect.CodeFailedPrecondition,
	errNotJoined:           connect.CodeFailedPrecondition,
	errNoSignals:           connect.CodeFailedPrecondition,
	errStaleAnswer:         connect.CodeFailedPrecondition,
	errSignalsReplaced:     connect.CodeFailedPrecondition,
	errSlowSignals:         connect.CodeResourceExhausted,
	errCallNodeUnreachable: connect.CodeUnavailable,
	errCallMoved:           connect.CodeUnavailable,

	// Database availability (heal).
	errDatabaseUnavailable: connect.CodeUnavailable,
}

// toConnectError maps err to what the client sees. A *connect.Error passes
// through; a sentinel from the table becomes its code with its own text;
// anything else is an internal failure: logged here, once, and hidden from the
// client behind a generic message.
func toConnectError(ctx context.Context, logger *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return err
	}
	for sentinel, code := range errorCodes {
		if errors.Is(err, sentinel) {
			return connect.NewError(code, sentinel)
		}
	}
	switch {
	case isUnavailable(err):
		// Retryable, and expected while the database restarts: a warning,
		// not an internal error.
		logger.WarnContext(ctx, "database unavailable", "procedure", procedure, "error", err)
		return connect.NewError(connect.CodeUnavailable, errDatabaseUnavailable)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request deadline exceeded"))
	}
	logger.ErrorContext(ctx, "internal error", "procedure", procedure, "error", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error; it has been logged"))
}

// resourceExhausted is the error for a throttled caller, carrying
// google.rpc.RetryInfo so that clients know when to try again.
func resourceExhausted(msg string, retryAfter time.Duration) error {
	cerr := connect.NewError(connect.CodeResourceExhausted, errors.New(msg))
	if detail, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); err == nil {
		cerr.AddDetail(detail)
	}
	return cerr
}

// invalidArgument is the error for a field the proto rules cannot check. It
// carries the same buf.validate.Violations detail as protovalidate's own
// errors, so clients read every field error one way.
func invalidArgument(field, ruleID, description string) error {
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+description))
	detail, err := connect.NewErrorDetail(&validate.Violations{Violations: []*validate.Violation{{
		Field:   &validate.FieldPath{Elements: []*validate.FieldPathElement{{FieldName: &field}}},
		RuleId:  &ruleID,
		Message: &description,
	}}})
	if err == nil {
		cerr.AddDetail(detail)
	}
	return cerr
}
