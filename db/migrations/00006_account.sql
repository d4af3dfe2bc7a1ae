-- +goose Up

-- Every user has a private account conversation: its log records what the
-- user did on one device that their other devices must learn (contacts,
-- blocks, settings, messages deleted for themselves), so every device
-- converges through Subscribe and Sync like any other conversation.
ALTER TABLE users ADD COLUMN account_conversation_id uuid UNIQUE REFERENCES conversations (id);

-- +goose StatementBegin
DO $$
DECLARE
    u    record;
    conv uuid;
BEGIN
    FOR u IN SELECT id FROM users WHERE account_conversation_id IS NULL LOOP
        INSERT INTO conversations (kind) VALUES (3) RETURNING id INTO conv;
        INSERT INTO members (conversation_id, user_id) VALUES (conv, u.id);
        UPDATE users SET account_conversation_id = conv WHERE id = u.id;
    END LOOP;
END
$$;
-- +goose StatementEnd

ALTER TABLE users ALTER COLUMN account_conversation_id SET NOT NULL;

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    ALTER TABLE users DROP COLUMN account_conversation_id;
    DELETE FROM conversations WHERE kind = 3;
END
$$;
-- +goose StatementEnd
