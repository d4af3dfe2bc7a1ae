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
// sentinels, each declared with the Connect code it maps to, so a new sentinel
// cannot be added without one (TestEveryServerErrorIsDeclaredWithItsCode holds
// the package to this). The sentinel's text is what the client sees, so it
// must make sense to a client developer.
var (
	errUsernameTaken     = clientError(connect.CodeAlreadyExists, "username is already taken")
	errBadCredentials    = clientError(connect.CodeUnauthenticated, "wrong username or password")
	errWrongPassword     = clientError(connect.CodeUnauthenticated, "current password is wrong")
	errSessionNotFound   = clientError(connect.CodeNotFound, "session not found")
	errRefreshUnknown    = clientError(connect.CodeUnauthenticated, "refresh token is not valid")
	errRefreshExpired    = clientError(connect.CodeUnauthenticated, "refresh token has expired; log in again")
	errRefreshReused     = clientError(connect.CodeUnauthenticated, "refresh token was already used; the session has been revoked, log in again")
	errSessionRevoked    = clientError(connect.CodeUnauthenticated, "session has been revoked; log in again")
	errBadPageToken      = clientError(connect.CodeInvalidArgument, "page_token is not valid for this request")
	errUserNotFound      = clientError(connect.CodeNotFound, "user not found")
	errTokenMissing      = clientError(connect.CodeUnauthenticated, "missing access token: send it as 'Authorization: Bearer <token>'")
	errTokenInvalid      = clientError(connect.CodeUnauthenticated, "access token is not valid")
	errTokenExpired      = clientError(connect.CodeUnauthenticated, "access token has expired; refresh it")
	errPasswordSameAsOld = clientError(connect.CodeInvalidArgument, "new_password must differ from current_password")

	errConversationNotFound = clientError(connect.CodeNotFound, "conversation not found")
	errMessageNotFound      = clientError(connect.CodeNotFound, "message not found")
	errNotMember            = clientError(connect.CodePermissionDenied, "you are no longer a member of this conversation")
	errReceiptsForSender    = clientError(connect.CodePermissionDenied, "read receipts are only for the sender of the message")
	errRecallNotSender      = clientError(connect.CodePermissionDenied, "only the sender may recall this message")
	errRecallSystem         = clientError(connect.CodeFailedPrecondition, "system messages cannot be recalled")
	errAlreadyRecalled      = clientError(connect.CodeFailedPrecondition, "message is already recalled")
	errRecallTooLate        = clientError(connect.CodeFailedPrecondition, "the time to recall this message has passed")
	errTooManyPinned        = clientError(connect.CodeResourceExhausted, "at most 20 conversations can be pinned; unpin one first")
	errAccountConversation  = clientError(connect.CodePermissionDenied, "the account conversation is written by the server; nobody sends to it")
	errFriendsOnly          = clientError(connect.CodePermissionDenied, "this user accepts direct messages from contacts only")
	errStrangerLimit        = clientError(connect.CodePermissionDenied, "this user accepts at most 3 messages from people who are not their contacts until they reply")
	// errBlocked refuses a direct message the recipient blocked. Its text
	// does not say "blocked": the user blocked is not told why (see
	// ContactsService), only that this conversation is closed to them.
	errBlocked = clientError(connect.CodePermissionDenied, "you cannot send direct messages to this user")
	// errYouBlocked is the blocker's own view of their block, which they
	// know of.
	errYouBlocked           = clientError(connect.CodePermissionDenied, "you blocked this user; unblock them first")
	errAlreadyContacts      = clientError(connect.CodeAlreadyExists, "you are already contacts")
	errFriendRequestUnknown = clientError(connect.CodeNotFound, "friend request not found")
	errFriendRequestSettled = clientError(connect.CodeFailedPrecondition, "friend request is no longer pending")
	errNotContact           = clientError(connect.CodeNotFound, "this user is not one of your contacts")
	errAddNotContact        = clientError(connect.CodePermissionDenied, "you can add only your contacts to a group")
	errTooManyBlocked       = clientError(connect.CodeResourceExhausted, "you have blocked 10,000 users, the most there may be; unblock some first")
	errTooManyStreams       = clientError(connect.CodeResourceExhausted, "too many open streams for this user; close one first")
	errSlowSubscriber       = clientError(connect.CodeResourceExhausted, "stream fell behind and was closed; subscribe again with your cursors")
	errStreamSessionEnded   = clientError(connect.CodeUnauthenticated, "session has been revoked; log in again")
	// errShuttingDown answers Sends still queued when the server stops:
	// nothing of theirs was stored, and a retry with the same client message
	// id is safe.
	errShuttingDown = clientError(connect.CodeUnavailable, "server is shutting down; send again")
	// errLostRace is internal: a concurrent request created what we meant to.
	errLostRace = errors.New("lost a creation race")

	// Groups.
	errGroupNotFound      = clientError(connect.CodeNotFound, "group not found")
	errNotGroupMember     = clientError(connect.CodePermissionDenied, "you are no longer a member of this group")
	errGroupDissolved     = clientError(connect.CodeFailedPrecondition, "the group was dissolved; it is read-only")
	errGroupFull          = clientError(connect.CodeResourceExhausted, "the group has reached its member limit")
	errTooManyAdmins      = clientError(connect.CodeResourceExhausted, "a group has at most 10 admins; make one a member first")
	errNotGroupOwner      = clientError(connect.CodePermissionDenied, "only the group's owner may do this")
	errNotGroupAdmin      = clientError(connect.CodePermissionDenied, "only the group's owner and admins may do this")
	errInvitesRestricted  = clientError(connect.CodePermissionDenied, "only the group's owner and admins may invite to this group")
	errDoesNotOutrank     = clientError(connect.CodePermissionDenied, "you may only act on members below your role: the owner on anyone, admins on ordinary members")
	errTargetNotMember    = clientError(connect.CodeNotFound, "that user is not a member of this group")
	errTargetIsOwner      = clientError(connect.CodeFailedPrecondition, "the owner's role changes only with TransferOwnership")
	errMutedAll           = clientError(connect.CodePermissionDenied, "only the owner and admins may send in this group for now")
	errMutedInGroup       = clientError(connect.CodePermissionDenied, "you are muted in this group; GetGroup shows until when")
	errInviteNotFound     = clientError(connect.CodeNotFound, "invite code not found")
	errInviteExpired      = clientError(connect.CodeFailedPrecondition, "this invite code has expired")
	errInviteRevoked      = clientError(connect.CodeFailedPrecondition, "this invite code was revoked")
	errInviteUsedUp       = clientError(connect.CodeFailedPrecondition, "this invite code has been used up")
	errInviteInactive     = clientError(connect.CodeFailedPrecondition, "this invite code no longer works: its creator may no longer invite to the group")
	errTooManyInvites     = clientError(connect.CodeResourceExhausted, "a group has at most 20 usable invite codes; revoke one first")
	errRemovedFromGroup   = clientError(connect.CodePermissionDenied, "you were removed from this group; a member must add you back")
	errMayNotRevokeInvite = clientError(connect.CodePermissionDenied, "only the code's creator, the owner and admins may revoke it")

	// Media.
	errMediaNotFound     = clientError(connect.CodeNotFound, "media not found")
	errMediaNotReady     = clientError(connect.CodeFailedPrecondition, "media is not completed yet; upload its bytes and call CompleteUpload")
	errMediaNotYours     = clientError(connect.CodePermissionDenied, "media: you may only send media you uploaded yourself")
	errThumbnailNotFound = clientError(connect.CodeNotFound, "thumbnail_media_id: media not found among your uploads")
	errThumbnailUnfit    = clientError(connect.CodeFailedPrecondition, "thumbnail_media_id: must be a completed image of at most 1 MiB")
	errAvatarNotFound    = clientError(connect.CodeNotFound, "avatar_media_id: media not found among your uploads")
	errAvatarUnfit       = clientError(connect.CodeFailedPrecondition, "avatar_media_id: must be a completed image")
	errUploadExpired     = clientError(connect.CodeFailedPrecondition, "the upload has expired; create a new one")
	errUploadCompleting  = clientError(connect.CodeFailedPrecondition, "the upload is being completed by another CompleteUpload; call again when it has returned")
	errNothingUploaded   = clientError(connect.CodeFailedPrecondition, "nothing has been uploaded for this media; send its bytes to upload_url first")
	errUploadSize        = clientError(connect.CodeFailedPrecondition, "the uploaded bytes are not the declared size_bytes; create a new upload")
	errUploadChecksum    = clientError(connect.CodeFailedPrecondition, "the uploaded bytes do not match the declared sha256; create a new upload")
	errImageUndecodable  = clientError(connect.CodeFailedPrecondition, "the uploaded image cannot be decoded; create a new upload")

	// Calls.
	errCallNotFound        = clientError(connect.CodeNotFound, "call not found")
	errCallInProgress      = clientError(connect.CodeAlreadyExists, "a call is already in progress in this conversation; join it with AnswerCall")
	errInAnotherCall       = clientError(connect.CodeFailedPrecondition, "you are already in another call; hang up first")
	errCalleeBusy          = clientError(connect.CodeFailedPrecondition, "busy: the user you are calling is in another call")
	errCallEnded           = clientError(connect.CodeFailedPrecondition, "the call has ended")
	errCallNotRinging      = clientError(connect.CodeFailedPrecondition, "the call is no longer ringing")
	errAlreadyInCall       = clientError(connect.CodeFailedPrecondition, "you are already in this call, perhaps on another device")
	errCallFull            = clientError(connect.CodeResourceExhausted, "the call is full")
	errNotInvited          = clientError(connect.CodeFailedPrecondition, "you are not being rung for this call")
	errNotJoined           = clientError(connect.CodeFailedPrecondition, "you have not joined this call; answer it first")
	errNoSignals           = clientError(connect.CodeFailedPrecondition, "open Signals for this call first")
	errStaleAnswer         = clientError(connect.CodeFailedPrecondition, "the answer's revision is not the outstanding offer's")
	errSignalsReplaced     = clientError(connect.CodeFailedPrecondition, "another Signals stream for this call replaced this one")
	errSlowSignals         = clientError(connect.CodeResourceExhausted, "Signals stream fell behind and was closed; open it again")
	errCallNodeUnreachable = clientError(connect.CodeUnavailable, "the node hosting this call cannot be reached right now; retry")
	errCallMoved           = clientError(connect.CodeUnavailable, "this call's media moved to another node; open Signals again")

	// Database availability (heal). errDatabaseUnavailable answers any call
	// that failed because the database could not be reached (isUnavailable):
	// it is down or restarting, and a retry will succeed once it is back.
	errDatabaseUnavailable = clientError(connect.CodeUnavailable, "the database is unavailable right now; retry shortly")
)

// clientErr is a failure a client can act on: its code and text are what the
// client sees. Declare one only through clientError, in the table above.
type clientErr struct {
	code connect.Code
	text string
}

func (e *clientErr) Error() string { return e.text }

// clientError declares a sentinel of the error table with its code.
func clientError(code connect.Code, text string) error {
	return &clientErr{code: code, text: text}
}

// toConnectError maps err to what the client sees. A *connect.Error passes
// through; a sentinel from the table (wrapped or not) becomes its code with its
// own text;
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
	var ce *clientErr
	if errors.As(err, &ce) {
		return connect.NewError(ce.code, ce)
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
