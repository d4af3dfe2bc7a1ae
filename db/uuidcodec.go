package db

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"
)

// The generated queries carry UUIDs as Go strings (sqlc.yaml maps uuid to
// string). pgtype's UUID codec encodes only its own UUID types in the binary
// format, so pgx failed on every []string bound to a uuid[] parameter, then
// encoded the whole array again as quoted text, for PostgreSQL to parse: the
// costliest part of binding Send's batch statements. stringUUIDCodec adds the
// binary encoding of a string; a string that is no UUID still fails it, and
// pgx falls back to text, so PostgreSQL reports the bad value as before.
type stringUUIDCodec struct{ pgtype.UUIDCodec }

func (c stringUUIDCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(string); ok && format == pgtype.BinaryFormatCode {
		return encodeStringUUID{}
	}
	return c.UUIDCodec.PlanEncode(m, oid, format, value)
}

type encodeStringUUID struct{}

func (encodeStringUUID) Encode(value any, buf []byte) ([]byte, error) {
	var u pgtype.UUID
	if err := u.Scan(value.(string)); err != nil {
		return nil, fmt.Errorf("encode uuid: %w", err)
	}
	return append(buf, u.Bytes[:]...), nil
}

// registerStringUUIDs puts the codec in m, for uuid and for uuid[] (whose
// array codec points at its element's type).
func registerStringUUIDs(m *pgtype.Map) {
	uuid := &pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: stringUUIDCodec{}}
	m.RegisterType(uuid)
	m.RegisterType(&pgtype.Type{Name: "_uuid", OID: pgtype.UUIDArrayOID, Codec: &pgtype.ArrayCodec{ElementType: uuid}})
}
