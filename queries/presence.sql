-- name: SetLastSeen :exec
UPDATE users SET last_seen_at = $2 WHERE id = $1;

-- PresencePeers are the users who may see userID's presence: their contacts
-- and the other members of their direct conversations, unless either blocked
-- the other (a blocker's presence is hidden from the user blocked, and the
-- list serves both ways: it is also whose presence userID sees).
-- name: PresencePeers :many
SELECT peer.user_id
FROM (
    SELECT other.user_id
    FROM members me
    JOIN conversations c ON c.id = me.conversation_id AND c.kind = 1
    JOIN members other ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
    WHERE me.user_id = @user_id::uuid
    UNION
    SELECT contact_id FROM contacts WHERE contacts.user_id = @user_id::uuid
) AS peer
WHERE NOT EXISTS (SELECT 1 FROM blocks b
                  WHERE (b.blocker_id = @user_id::uuid AND b.blocked_id = peer.user_id)
                     OR (b.blocker_id = peer.user_id AND b.blocked_id = @user_id::uuid));
