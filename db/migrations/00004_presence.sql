-- +goose Up

-- last_seen_at is when the user's last stream closed; NULL while never seen.
ALTER TABLE users ADD COLUMN last_seen_at timestamptz;

-- +goose Down
ALTER TABLE users DROP COLUMN last_seen_at;
