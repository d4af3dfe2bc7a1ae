-- name: InsertCall :one
INSERT INTO calls (conversation_id, kind, initiator_id) VALUES ($1, $2, $3) RETURNING *;

-- name: InsertCallParticipant :exec
INSERT INTO call_participants (call_id, user_id, state, started_at, joined_at)
VALUES (@call_id, @user_id, @state, @started_at, CASE WHEN @joined::boolean THEN now() END);

-- name: GetCall :one
SELECT * FROM calls WHERE id = $1;

-- name: GetActiveCall :one
SELECT * FROM calls WHERE conversation_id = $1 AND state < 3;

-- name: ListCallParticipants :many
SELECT * FROM call_participants WHERE call_id = $1 ORDER BY started_at, joined_at NULLS LAST, user_id;

-- ListCallParticipantsOf reads the participants of several calls at once.
-- name: ListCallParticipantsOf :many
SELECT * FROM call_participants WHERE call_id = ANY(@ids::uuid[]) ORDER BY call_id, joined_at NULLS LAST, user_id;

-- UserInCall returns the call a user is joined to, if any.
-- name: UserInCall :one
SELECT call_id FROM call_participants WHERE user_id = $1 AND state = 2;

-- name: SetCallParticipant :exec
UPDATE call_participants
SET state = @state::smallint,
    joined_at = CASE WHEN @state::smallint = 2 THEN now() ELSE joined_at END,
    left_at = CASE WHEN @state::smallint = 4 THEN now() ELSE left_at END
WHERE call_id = @call_id AND user_id = @user_id;

-- name: AnswerCallRow :exec
UPDATE calls SET state = 2, answered_at = COALESCE(answered_at, now()) WHERE id = @id;

-- EndCall ends a call; its joined participants leave and those still rung
-- missed it.
-- name: EndCall :one
UPDATE calls SET state = 3, outcome = @outcome, ended_at = now() WHERE id = @id RETURNING *;

-- name: EndCallParticipants :exec
UPDATE call_participants
SET state = CASE state WHEN 2 THEN 4 WHEN 1 THEN 5 ELSE state END,
    left_at = CASE state WHEN 2 THEN now() ELSE left_at END
WHERE call_id = @id AND state IN (1, 2);

-- ListStaleRinging returns calls that rang past their time.
-- name: ListStaleRinging :many
SELECT id, conversation_id FROM calls WHERE state = 1 AND started_at <= now() - make_interval(secs => @timeout_seconds::float8) ORDER BY started_at LIMIT 100;

-- ListUserCalls lists a user's calls, newest first, optionally in one
-- conversation, after a page position.
-- name: ListUserCalls :many
SELECT c.* FROM call_participants p JOIN calls c ON c.id = p.call_id
WHERE p.user_id = @user_id
  AND (sqlc.narg(conversation_id)::uuid IS NULL OR c.conversation_id = sqlc.narg(conversation_id)::uuid)
  AND (sqlc.narg(before_started)::timestamptz IS NULL OR (p.started_at, p.call_id) < (sqlc.narg(before_started)::timestamptz, sqlc.narg(before_id)::uuid))
ORDER BY p.started_at DESC, p.call_id DESC
LIMIT @max_rows;

-- ListRinging returns every ringing call, and every active call with members
-- still being rung, with the seconds it has left to
-- ring (negative when it rang past its time), for a node that starts.
-- name: ListRinging :many
SELECT id, EXTRACT(EPOCH FROM started_at + make_interval(secs => @timeout_seconds::float8) - now())::float8 AS remaining_seconds
FROM calls c
WHERE c.state = 1
   OR (c.state = 2 AND EXISTS (SELECT 1 FROM call_participants p WHERE p.call_id = c.id AND p.state = 1));

-- name: InsertCallInvitees :exec
INSERT INTO call_participants (call_id, user_id, state, started_at)
SELECT @call_id, u, 1, @started_at FROM unnest(@user_ids::uuid[]) AS u;

-- name: ConversationKinds :many
SELECT id, kind FROM conversations WHERE id = ANY(@ids::uuid[]);
