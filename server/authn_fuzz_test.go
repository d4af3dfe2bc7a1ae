package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// The access tokens in testdata/fuzz/FuzzAccessToken are signed with
// fuzzTokenKey and live a century from fuzzTokenIssued, so that the committed
// seeds stay valid tokens to mutate.
var (
	fuzzTokenKey    = sha256.Sum256([]byte("parley FuzzAccessToken signing key"))
	fuzzTokenIssued = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
)

const (
	fuzzTokenTTL     = 100 * 365 * 24 * time.Hour
	fuzzTokenUser    = "11111111-1111-4111-8111-111111111111"
	fuzzTokenSession = "22222222-2222-4222-8222-222222222222"
)

// FuzzAccessToken sends the authentication middleware an Authorization
// header of scheme and a real access token edited (bytes start to end
// replaced by insert), which can be any string. It holds if every header is
// refused as Unauthenticated, except one that carries, after a
// case-insensitive "Bearer " (RFC 9110 §11.1), a token whose signature
// segment is exactly the base64url encoding, without padding, of the HMAC of
// the rest under the server's key: a mutated token is accepted only if it is
// byte for byte a token the server signed.
func FuzzAccessToken(f *testing.F) {
	sessions := newSessionCache(nil, time.Hour)
	// The seeds' session is active; any other needs the database, which is
	// nil: a forged token naming another session panics.
	sessions.entries[fuzzTokenSession] = time.Now().Add(fuzzTokenTTL)
	tk := newTokens(fuzzTokenKey[:], fuzzTokenTTL, sessions)
	raw, _, err := tk.issueAccess(fuzzTokenUser, fuzzTokenSession, fuzzTokenIssued)
	if err != nil {
		f.Fatal(err)
	}
	n := uint16(len(raw))
	f.Add("Bearer ", raw, uint16(0), uint16(0), "")
	f.Add("bearer ", raw, n-10, n-9, "A")
	authenticate := tk.authenticate(map[string]bool{})
	f.Fuzz(func(t *testing.T, scheme, token string, start, end uint16, insert string) {
		i := min(int(start), len(token))
		j := max(i, min(int(end), len(token)))
		header := scheme + token[:i] + insert + token[j:]
		r := &http.Request{
			Method: http.MethodPost,
			URL:    &url.URL{Path: "/parley.v1.MessagesService/Sync"},
			Header: http.Header{"Authorization": {header}},
		}
		info, err := authenticate(context.Background(), r)
		if err != nil {
			if code := connect.CodeOf(err); code != connect.CodeUnauthenticated {
				t.Fatalf("refused with code %v (%v), want %v", code, err, connect.CodeUnauthenticated)
			}
			return
		}
		const bearer = "Bearer "
		if len(header) < len(bearer) || !strings.EqualFold(header[:len(bearer)], bearer) {
			t.Fatalf("accepted %q, which does not start with %q", header, bearer)
		}
		token = header[len(bearer):]
		signed, sig, ok := cutLast(token, ".")
		if !ok {
			t.Fatalf("accepted %q, which has no signature segment", token)
		}
		mac := hmac.New(sha256.New, fuzzTokenKey[:])
		mac.Write([]byte(signed))
		if want := base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); sig != want {
			t.Fatalf("accepted %q, whose signature segment %q is not the one the server writes, %q", token, sig, want)
		}
		if c, ok := info.(caller); !ok || c != (caller{UserID: fuzzTokenUser, SessionID: fuzzTokenSession}) {
			t.Fatalf("accepted %q as %+v, want the seeds' caller", token, info)
		}
	})
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
