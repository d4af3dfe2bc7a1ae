package db

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func uuidStrings(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "0190b6a4-7c1e-7d2a-9f3b-" + string(rune('a'+i%6)) + "1c2d3e4f5a6"
	}
	return ids
}

// A []string bound to uuid[] encodes in the binary format, to the same
// UUIDs as pgtype's own values; a string that is no UUID fails it.
func TestStringUUIDsEncodeInBinary(t *testing.T) {
	m := pgtype.NewMap()
	registerStringUUIDs(m)
	ids := uuidStrings(3)
	got, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, nil)
	if err != nil {
		t.Fatalf("encode []string as uuid[]: %v", err)
	}
	want := make([]pgtype.UUID, len(ids))
	for i, s := range ids {
		if err := want[i].Scan(s); err != nil {
			t.Fatal(err)
		}
	}
	wantBytes, err := pgtype.NewMap().Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, want, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(wantBytes) {
		t.Fatalf("[]string encodes to %x, pgtype.UUID to %x", got, wantBytes)
	}
	if _, err := m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, []string{"not-a-uuid"}, nil); err == nil {
		t.Fatal("a string that is no UUID encoded")
	}
	var back []string
	if err := m.Scan(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, got, &back); err != nil || len(back) != 3 || back[0] != ids[0] {
		t.Fatalf("scan back: %v %v", back, err)
	}
}

func BenchmarkEncodeUUIDArray(b *testing.B) {
	ids := uuidStrings(16)
	for _, tc := range []struct {
		name string
		m    *pgtype.Map
	}{{"pgtype", pgtype.NewMap()}, {"strings", func() *pgtype.Map { m := pgtype.NewMap(); registerStringUUIDs(m); return m }()}} {
		b.Run(tc.name, func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				var err error
				// What pgx does: binary first, text when binary fails.
				buf, err = tc.m.Encode(pgtype.UUIDArrayOID, pgtype.BinaryFormatCode, ids, buf[:0])
				if err != nil {
					buf, err = tc.m.Encode(pgtype.UUIDArrayOID, pgtype.TextFormatCode, ids, buf[:0])
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
