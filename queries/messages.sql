-- name: CreateConversation :one
INSERT INTO conversations (kind) VALUES ($1) RETURNING *;

-- name: GetDirectConversationID :one
SELECT conversation_id FROM direct_pairs WHERE user_low = $1 AND user_high = $2;

-- InsertDirectPair claims the pair for a new conversation; it returns no row
-- when a concurrent request claimed it first.
-- name: InsertDirectPair :one
INSERT INTO direct_pairs (user_low, user_high, conversation_id) VALUES ($1, $2, $3)
ON CONFLICT (user_low, user_high) DO NOTHING
RETURNING conversation_id;

-- name: AddMember :exec
INSERT INTO members (conversation_id, user_id, role, joined_seq) VALUES ($1, $2, $3, $4);

-- LockConversation takes the conversation's row lock: every writer of one log
-- queues here, so seqs are allocated in commit order without gaps.
-- name: LockConversation :one
SELECT * FROM conversations WHERE id = $1 FOR UPDATE;

-- name: AllocateSeq :one
UPDATE conversations SET last_seq = last_seq + 1, last_message_at = now()
WHERE id = $1
RETURNING last_seq, last_message_at;

-- name: InsertMessage :one
INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, content, reply_to_seq, mention_user_ids, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *;

-- MarkSent records a member's message: sending reads everything before it.
-- name: MarkSent :exec
UPDATE members SET read_seq = GREATEST(read_seq, @seq::bigint), sent_count = sent_count + 1
WHERE conversation_id = @conversation_id AND user_id = @user_id;

-- name: GetMembership :one
SELECT * FROM memberships WHERE conversation_id = $1 AND user_id = $2;

-- name: ListMemberships :many
SELECT * FROM memberships WHERE user_id = $1;

-- ListConversationPage orders the user's conversations for the list: pinned
-- first, then by last activity.
-- name: ListConversationPage :many
SELECT * FROM memberships WHERE user_id = $1
ORDER BY (pinned_at IS NOT NULL) DESC, pinned_at DESC, last_message_at DESC, conversation_id DESC
LIMIT $2 OFFSET $3;

-- name: ListConversationMembers :many
SELECT * FROM members WHERE conversation_id = $1 ORDER BY joined_at, user_id;

-- name: GetMessage :one
SELECT * FROM messages WHERE conversation_id = $1 AND seq = $2;

-- ListMessagesAfter returns entries after_seq < seq <= until_seq, oldest first.
-- name: ListMessagesAfter :many
SELECT * FROM messages
WHERE conversation_id = @conversation_id AND seq > @after_seq AND seq <= @until_seq
ORDER BY seq
LIMIT @max_rows;

-- ListMessagesBefore returns entries from_seq <= seq < before_seq, newest first.
-- name: ListMessagesBefore :many
SELECT * FROM messages
WHERE conversation_id = @conversation_id AND seq < @before_seq AND seq >= @from_seq
ORDER BY seq DESC
LIMIT @max_rows;

-- MarkRead moves a read cursor forward only, and never past what the member
-- may see.
-- name: MarkRead :one
UPDATE members m SET read_seq = GREATEST(m.read_seq, LEAST(@seq::bigint, COALESCE(m.left_seq, c.last_seq)))
FROM conversations c
WHERE c.id = m.conversation_id AND m.conversation_id = @conversation_id AND m.user_id = @user_id
RETURNING m.read_seq;

-- name: ActiveSince :many
SELECT * FROM memberships WHERE user_id = $1 AND last_message_at >= $2;

-- name: UpdateMemberSettings :exec
UPDATE members
SET muted     = COALESCE(sqlc.narg('muted'), muted),
    pinned_at = CASE WHEN sqlc.narg('pinned')::boolean IS NULL THEN pinned_at
                     WHEN sqlc.narg('pinned')::boolean THEN COALESCE(pinned_at, now())
                     ELSE NULL END
WHERE conversation_id = @conversation_id AND user_id = @user_id;

-- name: CountPinned :one
SELECT count(*) FROM members WHERE user_id = $1 AND pinned_at IS NOT NULL AND left_seq IS NULL;

-- name: MarkRecalled :exec
UPDATE messages SET recalled_at = now() WHERE conversation_id = $1 AND seq = $2;

-- name: DeleteForUser :exec
INSERT INTO deleted_messages (user_id, conversation_id, seq)
SELECT @user_id, @conversation_id, s FROM unnest(@seqs::bigint[]) AS s
ON CONFLICT DO NOTHING;

-- name: DeletedSeqs :many
SELECT seq FROM deleted_messages
WHERE user_id = @user_id AND conversation_id = @conversation_id AND seq BETWEEN @from_seq AND @to_seq;

-- ClearHistory moves cleared_seq forward only.
-- name: ClearHistory :exec
UPDATE members SET cleared_seq = GREATEST(cleared_seq, @seq::bigint)
WHERE conversation_id = @conversation_id AND user_id = @user_id;

-- The queries below are the group commit of Send (server/commit.go): one
-- transaction appends the messages of many concurrent Sends.

-- FindSends returns the messages that some senders sent with some client
-- message ids; the caller keeps the pairs it asked about.
-- name: FindSends :many
SELECT * FROM messages
WHERE sender_id = ANY(@sender_ids::uuid[]) AND client_msg_id = ANY(@client_msg_ids::text[]);

-- LockConversations takes the row locks of the conversations a batch
-- appends to, in id order so that two batches never deadlock. Holding them,
-- the batch allocates the next seqs without gaps.
-- name: LockConversations :many
SELECT id, kind, last_seq FROM conversations
WHERE id = ANY(@ids::uuid[])
ORDER BY id
FOR UPDATE;

-- ListMembersForAppend is what a batch checks each message against: the
-- members of its conversations with their privacy settings; in a group
-- their roles and mutes with the group's own state (on every row of the
-- group: the batch reads it without another round trip); and in a direct
-- conversation whether the member has the peer as a contact and whether the
-- member blocks the peer: primary-key probes, made for direct conversations
-- only.
-- name: ListMembersForAppend :many
SELECT m.conversation_id, m.user_id, m.joined_seq, m.cleared_seq, m.sent_count, m.left_seq, u.message_privacy,
       m.role, m.mute_until, g.mute_all, g.dissolved_at,
       (ct.user_id IS NOT NULL)::boolean AS has_peer_as_contact,
       (b.blocker_id IS NOT NULL)::boolean AS blocks_peer
FROM members m
JOIN users u ON u.id = m.user_id
LEFT JOIN groups g ON g.conversation_id = m.conversation_id
-- Only a direct conversation has a pair, so only its members probe their
-- peer in contacts and blocks, each by primary key.
LEFT JOIN direct_pairs dp ON dp.conversation_id = m.conversation_id
LEFT JOIN contacts ct ON ct.user_id = m.user_id
    AND ct.contact_id = CASE WHEN dp.user_low = m.user_id THEN dp.user_high ELSE dp.user_low END
LEFT JOIN blocks b ON b.blocker_id = m.user_id
    AND b.blocked_id = CASE WHEN dp.user_low = m.user_id THEN dp.user_high ELSE dp.user_low END
WHERE m.conversation_id = ANY(@ids::uuid[])
ORDER BY m.conversation_id, m.joined_at, m.user_id;

-- ListGroupMembersForAppend is ListMembersForAppend for group
-- conversations, which can have thousands of members: it reads the member
-- rows and the group's state only, without the per-member probes of privacy,
-- contacts and blocks that matter in direct conversations alone.
-- name: ListGroupMembersForAppend :many
SELECT m.conversation_id, m.user_id, m.joined_seq, m.cleared_seq, m.sent_count, m.left_seq,
       m.role, m.mute_until, g.mute_all, g.dissolved_at
FROM members m
LEFT JOIN groups g ON g.conversation_id = m.conversation_id
WHERE m.conversation_id = ANY(@ids::uuid[])
ORDER BY m.conversation_id, m.joined_at, m.user_id;

-- AppendMessages writes a batch whose seqs the caller allocated under the
-- conversations' locks: the new positions of the conversations, the senders'
-- read cursors and message counts, and the messages (mentions are
-- comma-separated ids, as arrays of arrays must be rectangular). The unnests
-- in one select list run in lockstep, as rows of the arrays.
-- name: AppendMessages :many
WITH t AS (
    SELECT clock_timestamp() AS at
), conv AS (
    UPDATE conversations c SET last_seq = v.last_seq, last_message_at = t.at
    FROM (SELECT unnest(@conv_ids::uuid[]) AS id, unnest(@conv_last_seqs::bigint[]) AS last_seq) AS v, t
    WHERE c.id = v.id
), mark AS (
    UPDATE members m SET read_seq = GREATEST(m.read_seq, v.seq), sent_count = m.sent_count + v.n
    FROM (SELECT unnest(@mark_conv_ids::uuid[]) AS conversation_id, unnest(@mark_user_ids::uuid[]) AS user_id,
                 unnest(@mark_seqs::bigint[]) AS seq, unnest(@mark_counts::bigint[]) AS n) AS v
    WHERE m.conversation_id = v.conversation_id AND m.user_id = v.user_id
)
INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, content, reply_to_seq, mention_user_ids, created_at)
SELECT v.conversation_id, v.seq, v.sender_id, v.client_msg_id, v.kind, v.content, v.reply_to_seq,
       string_to_array(v.mentions, ',')::uuid[], t.at
FROM (SELECT unnest(@conversation_ids::uuid[]) AS conversation_id, unnest(@seqs::bigint[]) AS seq,
             unnest(@sender_ids::uuid[]) AS sender_id, unnest(@client_msg_ids::text[]) AS client_msg_id,
             unnest(@kinds::smallint[]) AS kind, unnest(@contents::bytea[]) AS content,
             unnest(@reply_to_seqs::bigint[]) AS reply_to_seq, unnest(@mentions::text[]) AS mentions) AS v, t
RETURNING *;

-- ListUserEntriesAfter is ListMessagesAfter as one user sees the entries:
-- deleted is true for those they deleted for themselves. Catch-up reads it,
-- so a page costs one round trip.
-- name: ListUserEntriesAfter :many
SELECT sqlc.embed(m), (d.seq IS NOT NULL)::boolean AS deleted
FROM messages m
LEFT JOIN deleted_messages d ON d.user_id = @user_id AND d.conversation_id = m.conversation_id AND d.seq = m.seq
WHERE m.conversation_id = @conversation_id AND m.seq > @after_seq AND m.seq <= @until_seq
ORDER BY m.seq
LIMIT @max_rows;
