-- +goose Up

-- state 3 (checking): one CompleteUpload has claimed the upload and is
-- moving and reading its bytes. Only that call may make the media ready
-- (3 -> 2) or give it back (3 -> 1) when its check did not finish, so two
-- completions never read, move or delete the same bytes at once. Clients
-- never see this state: GetMedia and Send treat it as not ready.
ALTER TABLE media DROP CONSTRAINT media_state_check;
ALTER TABLE media ADD CONSTRAINT media_state_check CHECK (state BETWEEN 1 AND 3);

-- +goose Down
UPDATE media SET state = 1 WHERE state = 3;
ALTER TABLE media DROP CONSTRAINT media_state_check;
ALTER TABLE media ADD CONSTRAINT media_state_check CHECK (state BETWEEN 1 AND 2);
