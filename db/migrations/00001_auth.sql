-- +goose Up

-- users are accounts. username is stored lower case, so the unique constraint
-- makes it unique regardless of case.
CREATE TABLE users (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username        text        NOT NULL UNIQUE CHECK (username = lower(username)),
    display_name    text        NOT NULL,
    bio             text        NOT NULL DEFAULT '',
    avatar_media_id uuid,
    password_hash   text        NOT NULL,
    -- message_privacy holds parley.v1.MessagePrivacy values; 3 = strangers limited.
    message_privacy smallint    NOT NULL DEFAULT 3 CHECK (message_privacy BETWEEN 1 AND 3),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Prefix search on username and display name (SearchUsers) regardless of the
-- database's collation.
CREATE INDEX users_username_prefix_idx ON users (username text_pattern_ops);
CREATE INDEX users_display_name_prefix_idx ON users (lower(display_name) text_pattern_ops);

-- sessions are signed-in devices. Only a hash of the current refresh token is
-- stored; a stolen database does not yield usable tokens.
CREATE TABLE sessions (
    id                 uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_name        text        NOT NULL DEFAULT '',
    platform           smallint    NOT NULL DEFAULT 0,
    client_address     text        NOT NULL DEFAULT '',
    refresh_token_hash bytea       NOT NULL UNIQUE,
    refresh_expires_at timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at         timestamptz,
    revoke_reason      text
);

CREATE INDEX sessions_user_active_idx ON sessions (user_id, last_used_at DESC) WHERE revoked_at IS NULL;

-- spent_refresh_tokens remembers rotated-out refresh tokens so that presenting
-- one again is recognised as theft and revokes the session.
CREATE TABLE spent_refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    spent_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX spent_refresh_tokens_session_idx ON spent_refresh_tokens (session_id);

-- server_secrets holds keys shared by every node, such as the access token
-- signing key, so that nodes need no key configuration to agree.
CREATE TABLE server_secrets (
    name       text        PRIMARY KEY,
    secret     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE server_secrets;
DROP TABLE spent_refresh_tokens;
DROP TABLE sessions;
DROP TABLE users;
