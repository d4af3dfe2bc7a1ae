-- name: SetLastSeen :exec
UPDATE users SET last_seen_at = $2 WHERE id = $1;

-- PresencePeers are the users who may see userID's presence: the other
-- members of their direct conversations.
-- name: PresencePeers :many
SELECT DISTINCT other.user_id
FROM members me
JOIN conversations c ON c.id = me.conversation_id AND c.kind = 1
JOIN members other ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
WHERE me.user_id = $1;
