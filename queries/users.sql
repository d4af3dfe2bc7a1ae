-- name: CreateUser :one
INSERT INTO users (username, display_name, password_hash, account_conversation_id)
VALUES ($1, $2, $3, $4)
RETURNING *;

-- name: GetAccountConversationID :one
SELECT account_conversation_id FROM users WHERE id = $1;

-- name: GetUser :one
SELECT * FROM users WHERE id = $1;

-- name: GetUserByUsername :one
SELECT * FROM users WHERE username = $1;

-- name: GetUsers :many
SELECT * FROM users WHERE id = ANY(@ids::uuid[]);

-- name: UpdateProfile :one
UPDATE users
SET display_name = coalesce(sqlc.narg('display_name'), display_name),
    bio          = coalesce(sqlc.narg('bio'), bio),
    updated_at   = now()
WHERE id = @id
RETURNING *;

-- name: SetPasswordHash :exec
UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1;

-- name: SetMessagePrivacy :one
UPDATE users SET message_privacy = $2, updated_at = now() WHERE id = $1
RETURNING *;

-- SearchUsers matches a LIKE prefix pattern (already escaped and lower-cased)
-- against usernames and display names, in username order after a cursor.
-- name: SearchUsers :many
SELECT * FROM users
WHERE (username LIKE @prefix OR lower(display_name) LIKE @prefix)
  AND username > @after
ORDER BY username
LIMIT @max_rows;
