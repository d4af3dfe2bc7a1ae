-- name: CreateMedia :one
INSERT INTO media (uploader_id, kind, content_type, size_bytes, sha256, file_name, width, height,
                   duration_ms, thumbnail_media_id, upload_key, storage_key, expires_at)
VALUES (@uploader_id, @kind, @content_type, @size_bytes, @sha256, @file_name, @width, @height,
        sqlc.narg('duration_ms'), sqlc.narg('thumbnail_media_id'), sqlc.narg('upload_key'), @storage_key, @expires_at)
RETURNING *;

-- InsertThumbnail stores a thumbnail the server made: a ready IMAGE media of
-- the original's uploader.
-- name: InsertThumbnail :one
INSERT INTO media (uploader_id, kind, state, content_type, size_bytes, file_name, width, height,
                   storage_key, expires_at, completed_at)
VALUES (@uploader_id, 1, 2, @content_type, @size_bytes, @file_name, @width, @height, @storage_key, now(), now())
RETURNING *;

-- name: GetMedia :one
SELECT * FROM media WHERE id = $1;

-- name: GetMediaList :many
SELECT * FROM media WHERE id = ANY(@ids::uuid[]);

-- ClaimUpload gives one CompleteUpload the upload of a pending media to
-- check (state 3, checking); no row when another call holds it or it is
-- ready already.
-- name: ClaimUpload :one
UPDATE media SET state = 3 WHERE id = @id AND state = 1
RETURNING *;

-- ReleaseUpload hands back a claimed upload whose check did not finish, so
-- that CompleteUpload may be called again.
-- name: ReleaseUpload :exec
UPDATE media SET state = 1 WHERE id = @id AND state = 3;

-- CompleteMedia makes a media its CompleteUpload claimed ready with what its
-- bytes showed. A media the sweeper deleted meanwhile returns no row.
-- name: CompleteMedia :one
UPDATE media
SET state = 2, width = @width, height = @height, thumbnail_media_id = sqlc.narg('thumbnail_media_id'),
    completed_at = now()
WHERE id = @id AND state = 3
RETURNING *;

-- ClaimExpiredUploads takes up to max_rows media whose upload URL expired
-- and whose upload key may hold an object, for the sweeper; SKIP LOCKED
-- lets several nodes sweep at once.
-- name: ClaimExpiredUploads :many
SELECT id, state, upload_key::text AS upload_key, storage_key FROM media
WHERE upload_key IS NOT NULL AND expires_at < @now
ORDER BY expires_at
LIMIT @max_rows
FOR UPDATE SKIP LOCKED;

-- name: ForgetUploadKeys :exec
UPDATE media SET upload_key = NULL WHERE id = ANY(@ids::uuid[]) AND state = 2;

-- name: DeleteMedia :exec
DELETE FROM media WHERE id = ANY(@ids::uuid[]) AND state <> 2;

-- name: InsertMessageMedia :exec
INSERT INTO message_media (media_id, conversation_id, seq)
SELECT unnest(@media_ids::uuid[]), unnest(@conversation_ids::uuid[]), unnest(@seqs::bigint[])
ON CONFLICT DO NOTHING;

-- MediaVisible says whether user_id may download a media: they uploaded it;
-- it is (the thumbnail of a media) in a message they can see that is not
-- recalled or deleted for them; or it is a user's profile picture (profiles
-- are public to signed-in users); or it is the avatar of a group they are in,
-- or were in when it was the avatar.
-- name: MediaVisible :one
SELECT (
    EXISTS (SELECT 1 FROM media x WHERE x.id = @media_id AND x.uploader_id = @user_id)
 OR EXISTS (
        SELECT 1 FROM message_media mm
        JOIN messages msg ON msg.conversation_id = mm.conversation_id AND msg.seq = mm.seq
        JOIN memberships ms ON ms.conversation_id = mm.conversation_id AND ms.user_id = @user_id
        WHERE mm.media_id = @media_id
          AND msg.recalled_at IS NULL
          AND mm.seq >= ms.joined_seq AND mm.seq > ms.cleared_seq AND mm.seq <= ms.visible_last_seq
          AND NOT EXISTS (SELECT 1 FROM deleted_messages d
                          WHERE d.user_id = @user_id AND d.conversation_id = mm.conversation_id AND d.seq = mm.seq))
 OR EXISTS (SELECT 1 FROM users u WHERE u.avatar_media_id = @media_id)
 OR EXISTS (SELECT 1 FROM groups g JOIN members m ON m.conversation_id = g.conversation_id AND m.user_id = @user_id
            WHERE g.avatar_media_id = @media_id AND m.left_seq IS NULL)
 OR EXISTS (SELECT 1 FROM members m WHERE m.user_id = @user_id AND m.left_group_avatar_media_id = @media_id)
)::boolean AS visible;

-- SetAvatar sets or (with NULL) clears a user's profile picture.
-- name: SetAvatar :one
UPDATE users SET avatar_media_id = sqlc.narg('avatar_media_id'), updated_at = now() WHERE id = @id
RETURNING *;
