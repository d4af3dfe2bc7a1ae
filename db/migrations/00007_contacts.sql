-- +goose Up

-- friend_requests are one user's requests to become another's contact, kept
-- after they are settled so that both users see how they ended.
CREATE TABLE friend_requests (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    from_user_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    to_user_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    greeting     text        NOT NULL DEFAULT '',
    -- state holds parley.v1.FriendRequestState: 1 pending, 2 accepted,
    -- 3 declined, 4 cancelled.
    state        smallint    NOT NULL DEFAULT 1 CHECK (state BETWEEN 1 AND 4),
    -- hidden marks a request sent to a user who blocks its sender: the sender
    -- sees it like any other, the recipient never does (until they unblock),
    -- so that a block is never revealed to the user blocked.
    hidden       boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (from_user_id <> to_user_id)
);

-- At most one pending request between two users, in either direction: a
-- request to someone who already asked you accepts theirs instead, and two
-- crossing requests can never both wait.
CREATE UNIQUE INDEX friend_requests_pending_pair_key ON friend_requests
    (LEAST(from_user_id, to_user_id), GREATEST(from_user_id, to_user_id)) WHERE state = 1;
-- ListFriendRequests: a user's incoming and outgoing requests, newest first.
CREATE INDEX friend_requests_to_idx ON friend_requests (to_user_id, created_at DESC, id DESC);
CREATE INDEX friend_requests_from_idx ON friend_requests (from_user_id, created_at DESC, id DESC);

-- contacts are friendships, one row per direction so that each side has its
-- own remark. Accepting a request inserts both rows and removing a contact
-- deletes both, in one transaction.
CREATE TABLE contacts (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    contact_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    remark     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, contact_id),
    CHECK (user_id <> contact_id)
);

-- ListContacts: most recent first.
CREATE INDEX contacts_user_since_idx ON contacts (user_id, created_at DESC, contact_id DESC);

-- blocks are one-sided: blocker_id blocked blocked_id. Send checks them in
-- both directions by primary key.
CREATE TABLE blocks (
    blocker_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    blocked_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker_id, blocked_id),
    CHECK (blocker_id <> blocked_id)
);

-- ListBlocked: most recently blocked first.
CREATE INDEX blocks_blocker_time_idx ON blocks (blocker_id, created_at DESC, blocked_id DESC);

-- +goose Down
DROP TABLE blocks;
DROP TABLE contacts;
DROP TABLE friend_requests;
