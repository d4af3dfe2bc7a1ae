-- GetRelationship says how user_id stands with other_id.
-- name: GetRelationship :one
SELECT EXISTS (SELECT 1 FROM contacts WHERE contacts.user_id = @user_id::uuid AND contact_id = @other_id::uuid) AS is_contact,
       EXISTS (SELECT 1 FROM blocks WHERE blocker_id = @user_id::uuid AND blocked_id = @other_id::uuid) AS blocks_other,
       EXISTS (SELECT 1 FROM blocks WHERE blocker_id = @other_id::uuid AND blocked_id = @user_id::uuid) AS blocked_by_other;

-- GetAccountConversationIDs returns the account conversations of users, in
-- id order: the order in which a transaction that writes several locks them
-- (LockConversations).
-- name: GetAccountConversationIDs :many
SELECT account_conversation_id FROM users WHERE id = ANY(@ids::uuid[]) ORDER BY account_conversation_id;

-- name: CreateFriendRequest :one
INSERT INTO friend_requests (from_user_id, to_user_id, greeting, hidden) VALUES ($1, $2, $3, $4)
RETURNING *;

-- name: GetFriendRequest :one
SELECT * FROM friend_requests WHERE id = $1;

-- PendingFriendRequest returns the pending request between two users, in
-- either direction (there is at most one).
-- name: PendingFriendRequest :one
SELECT * FROM friend_requests
WHERE state = 1
  AND LEAST(from_user_id, to_user_id) = LEAST(@a::uuid, @b::uuid)
  AND GREATEST(from_user_id, to_user_id) = GREATEST(@a::uuid, @b::uuid);

-- SettleFriendRequest moves a pending request to its final state; it returns
-- no row when the request is no longer pending.
-- name: SettleFriendRequest :one
UPDATE friend_requests SET state = @state, updated_at = now()
WHERE id = @id AND state = 1
RETURNING *;

-- RevealFriendRequests makes the pending requests that from_user_id sent to
-- to_user_id while blocked by them visible to to_user_id.
-- name: RevealFriendRequests :many
UPDATE friend_requests SET hidden = false
WHERE from_user_id = @from_user_id AND to_user_id = @to_user_id AND hidden AND state = 1
RETURNING *;

-- ListIncomingFriendRequests pages through the requests sent to a user,
-- newest first, after the (after_time, after_id) of the previous page's last
-- row. Requests hidden from the user are left out. state 0 means any state.
-- name: ListIncomingFriendRequests :many
SELECT * FROM friend_requests
WHERE to_user_id = @user_id AND NOT hidden
  AND (@state::smallint = 0 OR state = @state::smallint)
  AND (sqlc.narg('after_time')::timestamptz IS NULL
       OR (created_at, id) < (sqlc.narg('after_time')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @max_rows;

-- ListOutgoingFriendRequests is ListIncomingFriendRequests for the requests a
-- user sent.
-- name: ListOutgoingFriendRequests :many
SELECT * FROM friend_requests
WHERE from_user_id = @user_id
  AND (@state::smallint = 0 OR state = @state::smallint)
  AND (sqlc.narg('after_time')::timestamptz IS NULL
       OR (created_at, id) < (sqlc.narg('after_time')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @max_rows;

-- name: AddContact :one
INSERT INTO contacts (user_id, contact_id, remark) VALUES ($1, $2, $3)
RETURNING *;

-- name: GetContact :one
SELECT sqlc.embed(c), sqlc.embed(u)
FROM contacts c JOIN users u ON u.id = c.contact_id
WHERE c.user_id = $1 AND c.contact_id = $2;

-- GetContactRemark is the remark user_id gave contact_id; no row when they
-- are not contacts.
-- name: GetContactRemark :one
SELECT remark FROM contacts WHERE user_id = $1 AND contact_id = $2;

-- ListContacts pages through a user's contacts, most recent first, after the
-- (after_time, after_id) of the previous page's last row.
-- name: ListContacts :many
SELECT sqlc.embed(c), sqlc.embed(u)
FROM contacts c JOIN users u ON u.id = c.contact_id
WHERE c.user_id = @user_id
  AND (sqlc.narg('after_time')::timestamptz IS NULL
       OR (c.created_at, c.contact_id) < (sqlc.narg('after_time')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY c.created_at DESC, c.contact_id DESC
LIMIT @max_rows;

-- name: SetContactRemark :one
UPDATE contacts SET remark = @remark WHERE user_id = @user_id AND contact_id = @contact_id
RETURNING *;

-- RemoveContacts ends a friendship: both directions.
-- name: RemoveContacts :many
DELETE FROM contacts
WHERE (user_id = @a::uuid AND contact_id = @b::uuid) OR (user_id = @b::uuid AND contact_id = @a::uuid)
RETURNING *;

-- BlockUser returns no row when the block exists already.
-- name: BlockUser :one
INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: GetBlock :one
SELECT * FROM blocks WHERE blocker_id = $1 AND blocked_id = $2;

-- name: CountBlocked :one
SELECT count(*) FROM blocks WHERE blocker_id = $1;

-- UnblockUser returns no row when there was no block.
-- name: UnblockUser :one
DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2
RETURNING *;

-- ListBlocked pages through the users a user blocked, most recent first,
-- after the (after_time, after_id) of the previous page's last row.
-- name: ListBlocked :many
SELECT sqlc.embed(b), sqlc.embed(u)
FROM blocks b JOIN users u ON u.id = b.blocked_id
WHERE b.blocker_id = @user_id
  AND (sqlc.narg('after_time')::timestamptz IS NULL
       OR (b.created_at, b.blocked_id) < (sqlc.narg('after_time')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY b.created_at DESC, b.blocked_id DESC
LIMIT @max_rows;
