-- +goose Up

-- Nothing looks a message up by its id: clients and queries name a message
-- by (conversation_id, seq), the primary key. The unique index on id cost
-- every Send a btree insert at a random place (ids are random UUIDs), the
-- hottest write in Parley. A version 4 UUID's 122 random bits make a
-- collision no real concern; the id stays a stable public name.
ALTER TABLE messages DROP CONSTRAINT messages_id_key;

-- +goose Down
ALTER TABLE messages ADD CONSTRAINT messages_id_key UNIQUE (id);
