package server

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// FuzzEntryWire writes rows with arbitrary fields, stored content included,
// as catch-up does. It never panics; for a row PostgreSQL can hold (valid
// UTF-8 text) whose content is what the server stores (a Message encoding
// with fields of the content oneof only), a client decodes the
// SubscribeResponse, alone or in a batch, equal to the one messageToProto
// makes, and when the content is the canonical encoding of what it holds the
// bytes are proto.Marshal's.
func FuzzEntryWire(f *testing.F) {
	for _, c := range []*parleyv1.Message{
		{Content: &parleyv1.Message_Text{Text: &parleyv1.TextContent{Body: "héllo 👋"}}},
		{Content: &parleyv1.Message_Image{Image: &parleyv1.ImageContent{MediaId: "0b5e3c35-5a3c-4bd2-9f0b-8f1d0c6f7a11", Width: 640, Height: 480}}},
		{Content: &parleyv1.Message_System{System: &parleyv1.SystemContent{}}},
	} {
		content, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("3e0c1f5a-1111-4111-8111-111111111111", int64(42), "9d9d9d9d-2222-4222-8222-222222222222",
			"7f1b2c3d-0000-4000-8000-000000000001", true, "client-1", true,
			int64(1796184306), int64(789_000_000), int64(7), "aaaaaaaa-0000-4000-8000-000000000001,", false, false, content)
	}
	f.Fuzz(func(t *testing.T, conv string, seq int64, id, sender string, hasSender bool, client string, hasClient bool,
		sec, nsec, replyTo int64, mentions string, recalled, deleted bool, content []byte,
	) {
		row := db.Message{ConversationID: conv, Seq: seq, ID: id, ReplyToSeq: replyTo, Content: content}
		if hasSender {
			row.SenderID = &sender
		}
		if hasClient {
			row.ClientMsgID = &client
		}
		if sec != 0 || nsec != 0 {
			row.CreatedAt = time.Unix(sec, nsec)
		}
		if mentions != "" {
			row.MentionUserIds = strings.Split(mentions, ",")
		}
		if recalled {
			row.RecalledAt = &row.CreatedAt
		}
		wire := appendEntryWire(nil, row, deleted)
		if !storable(row) || !storedContent(content) {
			return
		}
		want, err := messageToProto(row)
		if err != nil {
			t.Fatalf("messageToProto of a row with a valid content: %v", err)
		}
		if deleted {
			markDeleted(want)
		}
		assertWireEventsDecode(t, wire, want)
		if canonical(content) {
			marshalled, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wire, marshalled) {
				t.Fatalf("encoding differs from proto.Marshal's:\n got %x\nwant %x", wire, marshalled)
			}
		}
	})
}

// storable reports whether PostgreSQL could hold m's text: valid UTF-8.
func storable(m db.Message) bool {
	texts := append([]string{m.ConversationID, m.ID}, m.MentionUserIds...)
	if m.SenderID != nil {
		texts = append(texts, *m.SenderID)
	}
	if m.ClientMsgID != nil {
		texts = append(texts, *m.ClientMsgID)
	}
	for _, s := range texts {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// storedContent reports whether b is what the server stores as a message's
// content: a valid Message encoding whose top-level fields all lie past
// wireDeleted, in the content oneof (or unknown to this build).
func storedContent(b []byte) bool {
	if err := proto.Unmarshal(b, &parleyv1.Message{}); err != nil {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num <= wireDeleted {
			return false
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// canonical reports whether b is the deterministic encoding of the Message it
// decodes to, as the server writes content.
func canonical(b []byte) bool {
	m := &parleyv1.Message{}
	if err := proto.Unmarshal(b, m); err != nil {
		return false
	}
	again, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return err == nil && bytes.Equal(again, b)
}
