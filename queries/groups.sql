-- Groups (server/groups.go). Every write below runs in a transaction that
-- holds the group conversation's row lock (LockConversation) first, so
-- membership counts, roles and the one owner are read settled.

-- name: InsertGroup :exec
INSERT INTO groups (conversation_id, name, created_by, avatar_media_id) VALUES ($1, $2, $3, $4);

-- GetGroup is a group with its owner and current member count.
-- name: GetGroup :one
SELECT sqlc.embed(g),
       COALESCE((SELECT o.user_id::text FROM members o
                 WHERE o.conversation_id = g.conversation_id AND o.role = 1 AND o.left_seq IS NULL), '')::text AS owner_id,
       (SELECT count(*) FROM members c WHERE c.conversation_id = g.conversation_id AND c.left_seq IS NULL)::int AS member_count
FROM groups g
WHERE g.conversation_id = $1;

-- ListGroups lists the groups userID is a current member of, most recently
-- joined first.
-- name: ListGroups :many
SELECT sqlc.embed(g),
       COALESCE((SELECT o.user_id::text FROM members o
                 WHERE o.conversation_id = g.conversation_id AND o.role = 1 AND o.left_seq IS NULL), '')::text AS owner_id,
       (SELECT count(*) FROM members c WHERE c.conversation_id = g.conversation_id AND c.left_seq IS NULL)::int AS member_count
FROM members m
JOIN groups g ON g.conversation_id = m.conversation_id
WHERE m.user_id = @user_id AND m.left_seq IS NULL
ORDER BY m.joined_at DESC, m.conversation_id DESC
LIMIT @max_rows OFFSET @skip;

-- GroupView is what a member's conversation shows of its group: the
-- profile (frozen at departure for a former member, who learns nothing
-- later), and the count and lowest read cursor of the other current members.
-- name: GroupView :one
SELECT g.dissolved_at, m.removed, m.left_seq,
       COALESCE(m.left_group_name, g.name)::text AS name,
       COALESCE((CASE WHEN m.left_seq IS NULL THEN g.avatar_media_id ELSE m.left_group_avatar_media_id END)::text, '')::text AS avatar_media_id,
       (SELECT count(*) FROM members c WHERE c.conversation_id = g.conversation_id AND c.left_seq IS NULL)::int AS member_count,
       COALESCE((SELECT min(o.read_seq) FROM members o
                 WHERE o.conversation_id = g.conversation_id AND o.left_seq IS NULL AND o.user_id <> m.user_id), 0)::bigint AS peer_read_seq
FROM groups g
JOIN members m ON m.conversation_id = g.conversation_id AND m.user_id = @user_id
WHERE g.conversation_id = @conversation_id;

-- name: GetMember :one
SELECT * FROM members WHERE conversation_id = $1 AND user_id = $2;

-- ListGroupMembers pages through a group's current members with their
-- profiles: the owner, then admins, then members, each by join time.
-- name: ListGroupMembers :many
SELECT sqlc.embed(m), sqlc.embed(u)
FROM members m
JOIN users u ON u.id = m.user_id
WHERE m.conversation_id = @conversation_id AND m.left_seq IS NULL
ORDER BY m.role, m.joined_at, m.user_id
LIMIT @max_rows OFFSET @skip;

-- JoinGroup makes users members from joined_seq on, or members again: a
-- former member's row is reopened, so their view restarts at the new
-- joined_seq and the history they saw before is no longer theirs. read_seq
-- is joined_seq - 1: only the entries from joined_seq count as unread.
-- name: JoinGroup :exec
INSERT INTO members (conversation_id, user_id, role, joined_seq, read_seq)
SELECT @conversation_id::uuid, u.id, @role::smallint, @joined_seq::bigint, @read_seq::bigint
FROM unnest(@user_ids::uuid[]) AS u(id)
ON CONFLICT (conversation_id, user_id) DO UPDATE
SET role = EXCLUDED.role, joined_seq = EXCLUDED.joined_seq,
    read_seq = GREATEST(members.read_seq, EXCLUDED.read_seq),
    joined_at = now(), left_seq = NULL, left_at = NULL, removed = false,
    left_group_name = NULL, left_group_avatar_media_id = NULL
WHERE members.left_seq IS NOT NULL;

-- EndMemberships records that users left (or were removed) at left_seq, the
-- entry that says so. The group's profile at that moment stays theirs. A
-- mute stays: leaving and coming back with an invite code does not lift it.
-- name: EndMemberships :exec
UPDATE members m
SET left_seq = @left_seq, left_at = now(), removed = @removed, role = 3,
    left_group_name = g.name, left_group_avatar_media_id = g.avatar_media_id
FROM groups g
WHERE g.conversation_id = m.conversation_id
  AND m.conversation_id = @conversation_id AND m.user_id = ANY(@user_ids::uuid[]) AND m.left_seq IS NULL;

-- name: SetMemberRole :exec
UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2;

-- name: SetMuteUntil :exec
UPDATE members SET mute_until = $3 WHERE conversation_id = $1 AND user_id = $2;

-- UpdateGroup changes the fields given; a NULL leaves a field as it is
-- (clear_avatar removes the avatar, avatar_media_id sets it).
-- name: UpdateGroup :exec
UPDATE groups
SET name                         = COALESCE(sqlc.narg('name'), name),
    announcement                 = COALESCE(sqlc.narg('announcement'), announcement),
    avatar_media_id              = CASE WHEN @clear_avatar::boolean THEN NULL ELSE COALESCE(sqlc.narg('avatar_media_id'), avatar_media_id) END,
    invites_restricted_to_admins = COALESCE(sqlc.narg('invites_restricted_to_admins'), invites_restricted_to_admins),
    mute_all                     = COALESCE(sqlc.narg('mute_all'), mute_all),
    updated_at                   = now()
WHERE conversation_id = @conversation_id;

-- name: TouchGroup :exec
UPDATE groups SET updated_at = now() WHERE conversation_id = $1;

-- name: DissolveGroup :exec
UPDATE groups SET dissolved_at = now(), updated_at = now() WHERE conversation_id = $1 AND dissolved_at IS NULL;

-- name: InsertInvite :one
INSERT INTO group_invites (code, conversation_id, creator_id, max_uses, expires_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: GetInvite :one
SELECT * FROM group_invites WHERE code = $1;

-- CountUsableInvites counts a group's codes that still let someone join.
-- name: CountUsableInvites :one
SELECT count(*) FROM group_invites
WHERE conversation_id = $1 AND revoked_at IS NULL
  AND (expires_at IS NULL OR expires_at > now()) AND (max_uses = 0 OR use_count < max_uses);

-- ListInvites pages through a group's codes, newest first: every code, or
-- only those of creator_id when it is set; unusable ones only when asked.
-- name: ListInvites :many
SELECT * FROM group_invites
WHERE conversation_id = @conversation_id
  AND (sqlc.narg('creator_id')::uuid IS NULL OR creator_id = sqlc.narg('creator_id')::uuid)
  AND (@include_unusable::boolean OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                                      AND (max_uses = 0 OR use_count < max_uses)))
ORDER BY created_at DESC, code
LIMIT @max_rows OFFSET @skip;

-- name: RevokeInvite :one
UPDATE group_invites SET revoked_at = COALESCE(revoked_at, now()) WHERE code = $1 RETURNING *;

-- UseInvite takes one use of a code that still works; it returns no row
-- when the code expired, was revoked or is used up.
-- name: UseInvite :one
UPDATE group_invites SET use_count = use_count + 1
WHERE code = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
  AND (max_uses = 0 OR use_count < max_uses)
RETURNING *;

-- name: RevokeGroupInvites :exec
UPDATE group_invites SET revoked_at = now() WHERE conversation_id = $1 AND revoked_at IS NULL;

-- AddableUsers says, for each existing user among ids, whether adder may
-- put them in a group: they are adder's contact and neither blocks the other.
-- name: AddableUsers :many
SELECT u.id,
       (EXISTS (SELECT 1 FROM contacts WHERE contacts.user_id = @adder_id::uuid AND contact_id = u.id)
        AND NOT EXISTS (SELECT 1 FROM blocks WHERE (blocker_id = u.id AND blocked_id = @adder_id::uuid)
                                                OR (blocker_id = @adder_id::uuid AND blocked_id = u.id)))::boolean AS addable
FROM users u
WHERE u.id = ANY(@ids::uuid[]);
