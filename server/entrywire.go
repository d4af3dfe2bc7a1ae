package server

import (
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// Catch-up is where a server spends most per entry: a reconnecting client
// may be owed thousands. Decoding each row's stored content into a Message
// only for the codec to encode it again costs more than reading the row, so
// catch-up writes the protobuf encoding of each entry straight from its row
// (the stored content already is the encoding of a Message holding only its
// content), and sends a batch as those bytes, in the unknown fields of an
// empty SubscribeResponse, which the binary codec writes out verbatim. A
// client decodes exactly what proto.Marshal of the same Message would give;
// TestEntryWireMatchesMessageToProto holds the two together.
//
// The field numbers of parley.v1.Message, MessageBatch and
// SubscribeResponse that the encoding uses; TestEntryWireFieldNumbers checks
// them against the generated descriptors.
const (
	wireConversationID protowire.Number = 1
	wireSeq            protowire.Number = 2
	wireID             protowire.Number = 3
	wireSenderID       protowire.Number = 4
	wireClientMsgID    protowire.Number = 5
	wireCreateTime     protowire.Number = 6
	wireReplyToSeq     protowire.Number = 7
	wireMentionUserIDs protowire.Number = 8
	wireRecalled       protowire.Number = 9
	wireDeleted        protowire.Number = 10

	wireTimestampSeconds protowire.Number = 1
	wireTimestampNanos   protowire.Number = 2

	wireBatchMessages protowire.Number = 1

	wireEventMessage      protowire.Number = 1
	wireEventMessageBatch protowire.Number = 9
)

// appendEntryWire appends the protobuf encoding of the Message that
// messageToProto makes of m (and markDeleted, when the user deleted it) to
// b. Fields at their zero value are left out, as proto.Marshal leaves them.
func appendEntryWire(b []byte, m db.Message, deleted bool) []byte {
	b = appendWireString(b, wireConversationID, m.ConversationID)
	if m.Seq != 0 {
		b = protowire.AppendTag(b, wireSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Seq))
	}
	b = appendWireString(b, wireID, m.ID)
	if m.SenderID != nil {
		b = appendWireString(b, wireSenderID, *m.SenderID)
	}
	if m.ClientMsgID != nil {
		b = appendWireString(b, wireClientMsgID, *m.ClientMsgID)
	}
	if !m.CreatedAt.IsZero() {
		var ts []byte
		if s := m.CreatedAt.Unix(); s != 0 {
			ts = protowire.AppendTag(ts, wireTimestampSeconds, protowire.VarintType)
			ts = protowire.AppendVarint(ts, uint64(s))
		}
		if n := m.CreatedAt.Nanosecond(); n != 0 {
			ts = protowire.AppendTag(ts, wireTimestampNanos, protowire.VarintType)
			ts = protowire.AppendVarint(ts, uint64(n))
		}
		b = protowire.AppendTag(b, wireCreateTime, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	if m.ReplyToSeq != 0 {
		b = protowire.AppendTag(b, wireReplyToSeq, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.ReplyToSeq))
	}
	recalled := m.RecalledAt != nil
	if !recalled && !deleted {
		for _, id := range m.MentionUserIds {
			// A repeated string is written even when empty.
			b = protowire.AppendTag(b, wireMentionUserIDs, protowire.BytesType)
			b = protowire.AppendString(b, id)
		}
	}
	if recalled {
		b = protowire.AppendTag(b, wireRecalled, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if deleted {
		b = protowire.AppendTag(b, wireDeleted, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if !recalled && !deleted {
		// The stored content holds the content oneof only (fields 11–16),
		// so appending it sets nothing written above.
		b = append(b, m.Content...)
	}
	return b
}

func appendWireString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// wireEvent returns a SubscribeResponse whose encoding is field num holding
// payload, an encoded Message or MessageBatch.
func wireEvent(num protowire.Number, payload []byte) *parleyv1.SubscribeResponse {
	raw := protowire.AppendTag(make([]byte, 0, len(payload)+protowire.SizeVarint(uint64(len(payload)))+2), num, protowire.BytesType)
	raw = protowire.AppendBytes(raw, payload)
	ev := &parleyv1.SubscribeResponse{}
	ev.ProtoReflect().SetUnknown(raw)
	return ev
}

// binaryCodec reports whether a request's Content-Type names the protobuf
// binary codec, the only one that writes unknown fields: JSON drops them,
// so a JSON stream gets its entries as messages.
func binaryCodec(contentType string) bool {
	return !strings.Contains(contentType, "json")
}
