package server

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

func TestEntryWireFieldNumbers(t *testing.T) {
	field := func(m proto.Message, name string) protowire.Number {
		f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
		if f == nil {
			t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), name)
		}
		return f.Number()
	}
	msg := &parleyv1.Message{}
	tests := []struct {
		name string
		got  protowire.Number
		want protowire.Number
	}{
		{"Message.conversation_id", wireConversationID, field(msg, "conversation_id")},
		{"Message.seq", wireSeq, field(msg, "seq")},
		{"Message.id", wireID, field(msg, "id")},
		{"Message.sender_id", wireSenderID, field(msg, "sender_id")},
		{"Message.client_msg_id", wireClientMsgID, field(msg, "client_msg_id")},
		{"Message.create_time", wireCreateTime, field(msg, "create_time")},
		{"Message.reply_to_seq", wireReplyToSeq, field(msg, "reply_to_seq")},
		{"Message.mention_user_ids", wireMentionUserIDs, field(msg, "mention_user_ids")},
		{"Message.recalled", wireRecalled, field(msg, "recalled")},
		{"Message.deleted", wireDeleted, field(msg, "deleted")},
		{"Timestamp.seconds", wireTimestampSeconds, field(&timestamppb.Timestamp{}, "seconds")},
		{"Timestamp.nanos", wireTimestampNanos, field(&timestamppb.Timestamp{}, "nanos")},
		{"MessageBatch.messages", wireBatchMessages, field(&parleyv1.MessageBatch{}, "messages")},
		{"SubscribeResponse.message", wireEventMessage, field(&parleyv1.SubscribeResponse{}, "message")},
		{"SubscribeResponse.message_batch", wireEventMessageBatch, field(&parleyv1.SubscribeResponse{}, "message_batch")},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: encoder writes field %d, the proto says %d", tt.name, tt.got, tt.want)
		}
	}
	// Every other field of Message is in the content oneof, which the
	// stored content carries.
	fields := msg.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		if f.Number() > wireDeleted && f.ContainingOneof() == nil {
			t.Errorf("Message.%s (%d) is outside the content oneof: the catch-up encoder does not write it", f.Name(), f.Number())
		}
	}
}

func TestEntryWireMatchesMessageToProto(t *testing.T) {
	content := func(m *parleyv1.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	textContent := content(&parleyv1.Message{Content: &parleyv1.Message_Text{Text: &parleyv1.TextContent{Body: "héllo 👋"}}})
	imageContent := content(&parleyv1.Message{Content: &parleyv1.Message_Image{Image: &parleyv1.ImageContent{MediaId: "0b5e3c35-5a3c-4bd2-9f0b-8f1d0c6f7a11", Width: 640, Height: 480}}})
	systemContent := content(&parleyv1.Message{Content: &parleyv1.Message_System{System: &parleyv1.SystemContent{}}})
	sender, client := "7f1b2c3d-0000-4000-8000-000000000001", "client-1"
	at := time.Date(2026, 12, 2, 4, 5, 6, 789_000_000, time.UTC)
	base := db.Message{
		ConversationID: "3e0c1f5a-1111-4111-8111-111111111111", Seq: 42, ID: "9d9d9d9d-2222-4222-8222-222222222222",
		SenderID: &sender, ClientMsgID: &client, Kind: kindText, Content: textContent, CreatedAt: at,
	}
	with := func(f func(*db.Message)) db.Message {
		m := base
		f(&m)
		return m
	}
	tests := []struct {
		name    string
		row     db.Message
		deleted bool
	}{
		{"a text message", base, false},
		{"a reply with mentions", with(func(m *db.Message) {
			m.ReplyToSeq = 7
			m.MentionUserIds = []string{"aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"}
		}), false},
		{"an image", with(func(m *db.Message) { m.Kind, m.Content = kindImage, imageContent }), false},
		{"a system entry without sender or client id", with(func(m *db.Message) {
			m.SenderID, m.ClientMsgID, m.Kind, m.Content = nil, nil, kindSystem, systemContent
		}), false},
		{"a recalled message keeps no content or mentions", with(func(m *db.Message) {
			m.RecalledAt, m.MentionUserIds = &at, []string{"aaaaaaaa-0000-4000-8000-000000000001"}
		}), false},
		{"a message deleted for the reader", with(func(m *db.Message) { m.MentionUserIds = []string{"aaaaaaaa-0000-4000-8000-000000000001"} }), true},
		{"a recalled message deleted for the reader", with(func(m *db.Message) { m.RecalledAt = &at }), true},
		{"a time on a whole second", with(func(m *db.Message) { m.CreatedAt = at.Truncate(time.Second) }), false},
		{"the first seq with an empty client id", with(func(m *db.Message) { m.Seq, m.ClientMsgID = 1, new(string) }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := messageToProto(tt.row)
			if err != nil {
				t.Fatal(err)
			}
			if tt.deleted {
				markDeleted(want)
			}
			got := &parleyv1.Message{}
			wire := appendEntryWire(nil, tt.row, tt.deleted)
			if err := proto.Unmarshal(wire, got); err != nil {
				t.Fatalf("decode the encoder's output: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded\n%v\nwant\n%v", got, want)
			}
			marshalled, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wire, marshalled) {
				t.Errorf("encoding differs from proto.Marshal's:\n got %x\nwant %x", wire, marshalled)
			}
		})
	}
}

func TestWireEventCarriesItsPayload(t *testing.T) {
	msg := &parleyv1.Message{ConversationId: "c", Seq: 3, Content: &parleyv1.Message_Text{Text: &parleyv1.TextContent{Body: "x"}}}
	entry, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	assertWireEventsDecode(t, entry, msg)
}

// assertWireEventsDecode fails t unless a client decodes entry, sent as one
// message and as a batch of two, to want.
func assertWireEventsDecode(t testing.TB, entry []byte, want *parleyv1.Message) {
	t.Helper()
	var batch []byte
	for range 2 {
		batch = protowire.AppendTag(batch, wireBatchMessages, protowire.BytesType)
		batch = protowire.AppendBytes(batch, entry)
	}
	for _, tt := range []struct {
		name string
		ev   *parleyv1.SubscribeResponse
		want *parleyv1.SubscribeResponse
	}{
		{"one message", wireEvent(wireEventMessage, entry), &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: want}}},
		{"a batch", wireEvent(wireEventMessageBatch, batch), &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_MessageBatch{
			MessageBatch: &parleyv1.MessageBatch{Messages: []*parleyv1.Message{want, want}},
		}}},
	} {
		b, err := proto.Marshal(tt.ev)
		if err != nil {
			t.Fatalf("%s: marshal: %v", tt.name, err)
		}
		got := &parleyv1.SubscribeResponse{}
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatalf("%s: a client cannot decode %x: %v", tt.name, b, err)
		}
		if !proto.Equal(got, tt.want) {
			t.Fatalf("%s: a client decodes\n%v\nwant\n%v", tt.name, got, tt.want)
		}
	}
}

func TestBinaryCodec(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/connect+proto": true,
		"application/grpc-web+proto": true, "application/grpc-web-text": true,
		"application/grpc+json": false, "application/connect+json": false, "application/grpc-web+json; charset=utf-8": false,
	} {
		if got := binaryCodec(ct); got != want {
			t.Errorf("binaryCodec(%q) = %v, want %v", ct, got, want)
		}
	}
}
