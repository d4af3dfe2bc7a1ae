-- +goose Up

-- groups are the profiles and settings of group conversations: a group's id
-- is its conversation's id. Every change to a row happens under the
-- conversation's row lock (LockConversation), so a Send batch holding that
-- lock reads settled values of mute_all and dissolved_at.
CREATE TABLE groups (
    conversation_id              uuid        PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    name                         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    announcement                 text        NOT NULL DEFAULT '' CHECK (char_length(announcement) <= 2000),
    avatar_media_id              uuid,
    -- invites_restricted_to_admins lets only the owner and admins add
    -- members and create invite links.
    invites_restricted_to_admins boolean     NOT NULL DEFAULT false,
    -- mute_all lets only the owner and admins send.
    mute_all                     boolean     NOT NULL DEFAULT false,
    created_by                   uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    -- dissolved_at makes the group read-only for good.
    dissolved_at                 timestamptz
);

-- mute_until stops a group member from sending until then.
-- removed is true when an owner or admin removed the (former) member, who may
-- then not come back through an invite link.
-- left_group_name and left_group_avatar_media_id are the group's name and
-- avatar when the member left: a former member's conversation keeps showing
-- them, learning nothing of later changes.
ALTER TABLE members
    ADD COLUMN mute_until                 timestamptz,
    ADD COLUMN removed                    boolean NOT NULL DEFAULT false,
    ADD COLUMN left_group_name            text,
    ADD COLUMN left_group_avatar_media_id uuid;

-- A group has exactly one owner among its current members (role 1 = owner).
CREATE UNIQUE INDEX members_one_owner_idx ON members (conversation_id) WHERE role = 1 AND left_seq IS NULL;

-- group_invites are invite codes. The code itself is stored, not a hash: the
-- owner and admins list a group's codes to share them again, and a code only
-- lets its holder join one group, as anyone the group shared it with can.
-- max_uses 0 means no limit; the check makes going past it impossible.
CREATE TABLE group_invites (
    code            text        PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES groups (conversation_id) ON DELETE CASCADE,
    creator_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    max_uses        integer     NOT NULL DEFAULT 0 CHECK (max_uses >= 0),
    use_count       integer     NOT NULL DEFAULT 0 CHECK (use_count >= 0 AND (max_uses = 0 OR use_count <= max_uses)),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX group_invites_group_idx ON group_invites (conversation_id, created_at DESC);

-- A former member's view of a conversation ends where they left, in time as
-- in seq: their conversation list, ordering and heartbeats stop moving with
-- activity they cannot see.
CREATE OR REPLACE VIEW memberships AS
SELECT m.conversation_id, m.user_id, m.role, m.joined_seq, m.read_seq, m.cleared_seq,
       m.sent_count, m.muted, m.pinned_at, m.joined_at, m.left_seq, m.left_at,
       c.kind, c.last_seq, COALESCE(m.left_at, c.last_message_at) AS last_message_at, c.created_at,
       COALESCE(m.left_seq, c.last_seq) AS visible_last_seq
FROM members m JOIN conversations c ON c.id = m.conversation_id;

-- +goose Down
CREATE OR REPLACE VIEW memberships AS
SELECT m.conversation_id, m.user_id, m.role, m.joined_seq, m.read_seq, m.cleared_seq,
       m.sent_count, m.muted, m.pinned_at, m.joined_at, m.left_seq, m.left_at,
       c.kind, c.last_seq, c.last_message_at, c.created_at,
       COALESCE(m.left_seq, c.last_seq) AS visible_last_seq
FROM members m JOIN conversations c ON c.id = m.conversation_id;
DROP TABLE group_invites;
DROP INDEX members_one_owner_idx;
ALTER TABLE members
    DROP COLUMN left_group_avatar_media_id,
    DROP COLUMN left_group_name,
    DROP COLUMN removed,
    DROP COLUMN mute_until;
DROP TABLE groups;
