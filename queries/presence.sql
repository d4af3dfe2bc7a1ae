-- name: SetLastSeen :exec
UPDATE users SET last_seen_at = $2 WHERE id = $1;

-- PresencePeers are the users who may see userID's presence: the other
-- members of their direct conversations, unless either blocked the other (a
-- blocker's presence is hidden from the user blocked, and the list serves
-- both ways: it is also whose presence userID sees).
-- name: PresencePeers :many
SELECT DISTINCT other.user_id
FROM members me
JOIN conversations c ON c.id = me.conversation_id AND c.kind = 1
JOIN members other ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
WHERE me.user_id = $1
  AND NOT EXISTS (SELECT 1 FROM blocks b
                  WHERE (b.blocker_id = me.user_id AND b.blocked_id = other.user_id)
                     OR (b.blocker_id = other.user_id AND b.blocked_id = me.user_id));
