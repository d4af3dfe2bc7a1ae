package server

import (
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"testing"
	"time"
)

// FuzzPageToken reads arbitrary page tokens, as given and as the base64url of
// arbitrary bytes. It holds if every token is refused with errBadPageToken
// or read as a position that a list can query (a time PostgreSQL and
// google.protobuf.Timestamp can both hold, an offset a query's int32 can
// hold) and that writes back as a token reading the same; and a position
// written as a token reads back unchanged.
func FuzzPageToken(f *testing.F) {
	at := time.Date(2026, 12, 2, 15, 4, 5, 123456000, time.UTC)
	id := "9d9d9d9d-2222-4222-8222-222222222222"
	tok := pageToken(at, id)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok, raw, at.UnixMicro(), id)
	f.Add("50", []byte("0/"+id), int64(0), id)
	f.Fuzz(func(t *testing.T, token string, payload []byte, micros int64, id string) {
		if isUUID(id) {
			at, gotID, err := parsePageToken(pageToken(time.UnixMicro(micros), id))
			switch {
			case !listableTime(time.UnixMicro(micros)):
				if !errors.Is(err, errBadPageToken) {
					t.Fatalf("a token at %d µs: got error %v, want %v", micros, err, errBadPageToken)
				}
			case err != nil:
				t.Fatalf("a token written from (%d µs, %q) does not read back: %v", micros, id, err)
			case at.UnixMicro() != micros || *gotID != id:
				t.Fatalf("a token written from (%d µs, %q) reads back as (%d µs, %q)", micros, id, at.UnixMicro(), *gotID)
			}
		}
		for _, tok := range []string{token, base64.RawURLEncoding.EncodeToString(payload)} {
			at, id, err := parsePageToken(tok)
			if err != nil {
				if !errors.Is(err, errBadPageToken) {
					t.Fatalf("parsePageToken(%q): got error %v, want %v", tok, err, errBadPageToken)
				}
				continue
			}
			if tok == "" {
				if at != nil || id != nil {
					t.Fatalf("the empty token reads as a position")
				}
				continue
			}
			if !listableTime(*at) || !isUUID(*id) {
				t.Fatalf("parsePageToken(%q) reads (%v, %q), which no row has", tok, *at, *id)
			}
			at2, id2, err := parsePageToken(pageToken(*at, *id))
			if err != nil || !at2.Equal(*at) || *id2 != *id {
				t.Fatalf("parsePageToken(%q) reads (%v, %q), which writes back as a token that reads (%v, %v, %v)", tok, *at, *id, at2, id2, err)
			}
		}
		n, err := pageOffset(token)
		if err != nil {
			if !errors.Is(err, errBadPageToken) {
				t.Fatalf("pageOffset(%q): got error %v, want %v", token, err, errBadPageToken)
			}
			return
		}
		if n < 0 || n > math.MaxInt32 {
			t.Fatalf("pageOffset(%q) = %d, outside the int32 the queries take", token, n)
		}
		if again, err := pageOffset(strconv.Itoa(n)); err != nil || again != n {
			t.Fatalf("pageOffset(%q) = %d, which writes back as a token that reads %d, %v", token, n, again, err)
		}
	})
}

// listableTime reports whether t is a time a listed row can have: one
// google.protobuf.Timestamp can hold (years 1 to 9999), which PostgreSQL can
// too.
func listableTime(t time.Time) bool {
	y := t.UTC().Year()
	return 1 <= y && y <= 9999
}
