-- +goose Up

-- deleted_messages are entries a user deleted for themselves (DeleteForMe with
-- seqs). They stay in the log for everyone else; for this user they come back
-- with deleted set and no content, so seqs stay consecutive.
CREATE TABLE deleted_messages (
    user_id         uuid   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id uuid   NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq),
    FOREIGN KEY (conversation_id, seq) REFERENCES messages (conversation_id, seq) ON DELETE CASCADE
);

-- +goose Down
DROP TABLE deleted_messages;
