-- +goose Up

-- calls are the voice and video calls of conversations. The database is the
-- record of a call's lifecycle; the ringing timer in memory only hurries a
-- missed call along (a ringing call older than the timeout is missed whoever
-- reads it first). kind holds parley.v1.CallKind (1 audio, 2 video), state
-- parley.v1.CallState (1 ringing, 2 active, 3 ended), outcome
-- parley.v1.CallOutcome (0 until the call ends). Every change to a call
-- happens under its conversation's row lock (LockConversation), as does the
-- CallEnded entry that records its end.
CREATE TABLE calls (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    kind            smallint    NOT NULL CHECK (kind IN (1, 2)),
    state           smallint    NOT NULL DEFAULT 1 CHECK (state BETWEEN 1 AND 3),
    outcome         smallint    NOT NULL DEFAULT 0 CHECK (outcome BETWEEN 0 AND 5),
    initiator_id    uuid        REFERENCES users (id) ON DELETE SET NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    answered_at     timestamptz,
    ended_at        timestamptz,
    CHECK ((state = 3) = (ended_at IS NOT NULL)),
    CHECK ((state = 3) = (outcome <> 0))
);

-- A conversation has at most one call in progress.
CREATE UNIQUE INDEX calls_one_active_idx ON calls (conversation_id) WHERE state < 3;
-- The ringing calls, for the sweep of those that timed out.
CREATE INDEX calls_ringing_idx ON calls (started_at) WHERE state = 1;
CREATE INDEX calls_conversation_idx ON calls (conversation_id, started_at DESC, id DESC);

-- call_participants are where each user stands in a call: state holds
-- parley.v1.CallParticipantState (1 invited, 2 joined, 3 declined, 4 left,
-- 5 missed). Every member rung has a row, so a user's call history is their
-- rows.
CREATE TABLE call_participants (
    call_id    uuid        NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      smallint    NOT NULL CHECK (state BETWEEN 1 AND 5),
    started_at timestamptz NOT NULL,
    joined_at  timestamptz,
    left_at    timestamptz,
    PRIMARY KEY (call_id, user_id)
);

-- A user is in at most one call at a time (from one device).
CREATE UNIQUE INDEX call_participants_one_call_idx ON call_participants (user_id) WHERE state = 2;
-- A user's call history, newest first (started_at copies the call's).
CREATE INDEX call_participants_history_idx ON call_participants (user_id, started_at DESC, call_id DESC);

-- +goose Down
DROP TABLE call_participants;
DROP TABLE calls;
