-- name: CreateSession :one
INSERT INTO sessions (user_id, device_name, platform, client_address, refresh_token_hash, refresh_expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: GetSession :one
SELECT * FROM sessions WHERE id = $1;

-- GetSessionByRefreshHashForUpdate locks the session so that two concurrent
-- refreshes with the same token cannot both succeed.
-- name: GetSessionByRefreshHashForUpdate :one
SELECT * FROM sessions WHERE refresh_token_hash = $1 FOR UPDATE;

-- name: GetSpentRefreshToken :one
SELECT * FROM spent_refresh_tokens WHERE token_hash = $1;

-- name: SpendRefreshToken :exec
INSERT INTO spent_refresh_tokens (token_hash, session_id) VALUES ($1, $2);

-- name: RotateRefreshToken :one
UPDATE sessions
SET refresh_token_hash = $2, refresh_expires_at = $3, last_used_at = now()
WHERE id = $1
RETURNING *;

-- name: ListActiveSessions :many
SELECT * FROM sessions
WHERE user_id = $1 AND revoked_at IS NULL AND refresh_expires_at > now()
ORDER BY last_used_at DESC
LIMIT 200;

-- name: RevokeSession :one
UPDATE sessions SET revoked_at = now(), revoke_reason = $3
WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL
RETURNING *;

-- name: RevokeOtherSessions :many
UPDATE sessions SET revoked_at = now(), revoke_reason = $3
WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL
RETURNING id;

-- name: GetServerSecret :one
SELECT secret FROM server_secrets WHERE name = $1;

-- name: InsertServerSecret :exec
INSERT INTO server_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING;

-- name: RevokeSessionByID :one
UPDATE sessions SET revoked_at = now(), revoke_reason = $2
WHERE id = $1 AND revoked_at IS NULL
RETURNING *;
