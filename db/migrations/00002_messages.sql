-- +goose Up

-- conversations are message logs. last_seq is the seq of the newest entry;
-- allocating the next seq updates this row, which serialises writers of one
-- conversation and keeps seqs gapless (the increment rolls back with a failed
-- insert).
CREATE TABLE conversations (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- kind holds parley.v1.ConversationKind: 1 direct, 2 group, 3 account.
    kind            smallint    NOT NULL CHECK (kind BETWEEN 1 AND 3),
    last_seq        bigint      NOT NULL DEFAULT 0,
    last_message_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- direct_pairs makes the direct conversation of two users unique.
CREATE TABLE direct_pairs (
    user_low        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_high       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL UNIQUE REFERENCES conversations (id) ON DELETE CASCADE,
    PRIMARY KEY (user_low, user_high),
    CHECK (user_low < user_high)
);

-- members are users' places in conversations. A member sees entries with
-- joined_seq <= seq <= (left_seq, or last_seq while current) and seq > cleared_seq.
CREATE TABLE members (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- role holds parley.v1.MemberRole: 1 owner, 2 admin, 3 member.
    role            smallint    NOT NULL DEFAULT 3,
    joined_seq      bigint      NOT NULL DEFAULT 1,
    read_seq        bigint      NOT NULL DEFAULT 0,
    cleared_seq     bigint      NOT NULL DEFAULT 0,
    -- sent_count counts the member's messages: the stranger limit of direct
    -- conversations reads it instead of counting rows.
    sent_count      bigint      NOT NULL DEFAULT 0,
    muted           boolean     NOT NULL DEFAULT false,
    pinned_at       timestamptz,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    left_seq        bigint,
    left_at         timestamptz,
    PRIMARY KEY (conversation_id, user_id),
    CHECK (read_seq >= 0 AND cleared_seq >= 0 AND joined_seq >= 1)
);

CREATE INDEX members_user_idx ON members (user_id, conversation_id);

-- messages are the entries of the logs. content is the encoded
-- parley.v1.Message content (the server owns its format); (sender_id,
-- client_msg_id) makes Send idempotent.
CREATE TABLE messages (
    conversation_id  uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              bigint      NOT NULL,
    id               uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    sender_id        uuid        REFERENCES users (id) ON DELETE SET NULL,
    client_msg_id    text,
    -- kind: 1 text, 2 image, 3 voice, 4 video, 5 file, 6 system.
    kind             smallint    NOT NULL,
    content          bytea       NOT NULL,
    reply_to_seq     bigint      NOT NULL DEFAULT 0,
    mention_user_ids uuid[]      NOT NULL DEFAULT '{}',
    recalled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq),
    UNIQUE (sender_id, client_msg_id)
);

-- memberships are members joined with their conversation's position: one
-- row type for every query that lists a user's conversations.
-- visible_last_seq is where the member's view of the log ends.
CREATE VIEW memberships AS
SELECT m.conversation_id, m.user_id, m.role, m.joined_seq, m.read_seq, m.cleared_seq,
       m.sent_count, m.muted, m.pinned_at, m.joined_at, m.left_seq, m.left_at,
       c.kind, c.last_seq, c.last_message_at, c.created_at,
       COALESCE(m.left_seq, c.last_seq) AS visible_last_seq
FROM members m JOIN conversations c ON c.id = m.conversation_id;

-- +goose Down
DROP VIEW memberships;
DROP TABLE messages;
DROP TABLE members;
DROP TABLE direct_pairs;
DROP TABLE conversations;
