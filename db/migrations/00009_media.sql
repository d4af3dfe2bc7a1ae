-- +goose Up

-- media are uploaded files. A row is written by CreateUpload (state 1,
-- pending) and becomes ready (state 2) in CompleteUpload once its bytes were
-- checked; only ready media can be put in a message or used as an avatar.
-- upload_key is where the client's bytes land; CompleteUpload moves them to
-- storage_key, which no client can write, before checking them. Both keys are
-- random: never the client's file name. Past expires_at, when the upload URL
-- no longer works, the sweeper deletes pending rows with their objects, and
-- whatever a client wrote to a ready media's upload key after completing it.
CREATE TABLE media (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    uploader_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- kind holds parley.v1.MediaKind: 1 image, 2 voice, 3 video, 4 file.
    kind               smallint    NOT NULL CHECK (kind BETWEEN 1 AND 4),
    -- state holds parley.v1.MediaState: 1 pending, 2 ready.
    state              smallint    NOT NULL DEFAULT 1 CHECK (state BETWEEN 1 AND 2),
    content_type       text        NOT NULL,
    size_bytes         bigint      NOT NULL CHECK (size_bytes > 0),
    sha256             text        NOT NULL DEFAULT '',
    file_name          text        NOT NULL DEFAULT '',
    width              integer     NOT NULL DEFAULT 0,
    height             integer     NOT NULL DEFAULT 0,
    duration_ms        bigint,
    thumbnail_media_id uuid        REFERENCES media (id) ON DELETE SET NULL,
    upload_key         text        UNIQUE,
    storage_key        text        NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    completed_at       timestamptz
);

CREATE INDEX media_upload_expiry_idx ON media (expires_at) WHERE upload_key IS NOT NULL;
CREATE INDEX media_thumbnail_idx ON media (thumbnail_media_id) WHERE thumbnail_media_id IS NOT NULL;

-- message_media are the media a message refers to (the file and its
-- thumbnail): a member who can see the message may download them, until it is
-- recalled.
CREATE TABLE message_media (
    media_id        uuid   NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    conversation_id uuid   NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq),
    FOREIGN KEY (conversation_id, seq) REFERENCES messages (conversation_id, seq) ON DELETE CASCADE
);

ALTER TABLE users ADD CONSTRAINT users_avatar_media_fk
    FOREIGN KEY (avatar_media_id) REFERENCES media (id) ON DELETE SET NULL;
ALTER TABLE groups ADD CONSTRAINT groups_avatar_media_fk
    FOREIGN KEY (avatar_media_id) REFERENCES media (id) ON DELETE SET NULL;
CREATE INDEX users_avatar_media_idx ON users (avatar_media_id) WHERE avatar_media_id IS NOT NULL;
CREATE INDEX groups_avatar_media_idx ON groups (avatar_media_id) WHERE avatar_media_id IS NOT NULL;

-- +goose Down
DROP INDEX groups_avatar_media_idx;
DROP INDEX users_avatar_media_idx;
ALTER TABLE groups DROP CONSTRAINT groups_avatar_media_fk;
ALTER TABLE users DROP CONSTRAINT users_avatar_media_fk;
DROP TABLE message_media;
DROP TABLE media;
