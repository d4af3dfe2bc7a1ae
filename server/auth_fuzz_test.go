package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// FuzzRefreshToken presents edits of a session's live refresh token (bytes
// start to end replaced by insert) to Refresh, as raw protobuf over real
// HTTP, so that any bytes reach the server, even those a client library
// refuses to encode. It holds if the live token itself is accepted (and
// replaced by the new one Refresh returns), every other string is refused
// as Unauthenticated or InvalidArgument, never Internal, and no refused
// string revokes the session, except a token already spent, whose reuse
// must.
func FuzzRefreshToken(f *testing.F) {
	e := newEnv(f)
	acc := e.signUp("refresh_fuzz")
	live, session := acc.tokens.GetRefreshToken(), acc.tokens.GetSessionId()
	n := uint8(len(live))
	f.Add(uint8(0), uint8(0), "")                       // the live token
	f.Add(n-1, n, "A")                                  // its last character changed
	f.Add(uint8(0), n, "")                              // empty
	f.Add(n, n, "=")                                    // padded
	f.Add(uint8(10), uint8(11), "\x00")                 // a NUL inside
	f.Add(uint8(10), uint8(11), "\xff\xfe")             // not UTF-8
	f.Add(n, n, string(bytes.Repeat([]byte{'x'}, 600))) // too long
	spent := map[string]string{}                        // spent token → its session
	f.Fuzz(func(t *testing.T, start, end uint8, insert string) {
		i := min(int(start), len(live))
		j := max(i, min(int(end), len(live)))
		presented := live[:i] + insert + live[j:]
		code, res := refreshRaw(t, e, presented)
		switch {
		case presented == live:
			if code != "" {
				t.Fatalf("the live refresh token was refused: %s", code)
			}
			spent[live] = session
			live, session = res.GetTokens().GetRefreshToken(), res.GetTokens().GetSessionId()
			return
		case code == "":
			t.Fatalf("refresh token %q, an edit of the live %q, was accepted", presented, live)
		case code != "unauthenticated" && code != "invalid_argument":
			t.Fatalf("refresh token %q: got code %s, want unauthenticated or invalid_argument", presented, code)
		}
		if reusedOf, reused := spent[presented]; reused && !revoked(t, e, reusedOf) {
			t.Fatalf("refresh token %q was spent before, and its reuse left its session active", presented)
		}
		if revoked(t, e, session) {
			if spent[presented] != session {
				t.Fatalf("refresh token %q, refused, revoked the live session", presented)
			}
			fresh := e.in(t).login(acc) // a spent token came back: start a new session
			live, session = fresh.tokens.GetRefreshToken(), fresh.tokens.GetSessionId()
		}
	})
}

func revoked(t *testing.T, e *env, session string) bool {
	t.Helper()
	s, err := e.db.GetSession(context.Background(), session)
	if err != nil {
		t.Fatal(err)
	}
	return s.RevokedAt != nil
}

// refreshRaw calls Refresh with token written as raw protobuf and returns
// the error code ("" on success) and the response.
func refreshRaw(t *testing.T, e *env, token string) (string, *parleyv1.RefreshResponse) {
	t.Helper()
	body := protowire.AppendTag(nil, 1, protowire.BytesType)
	body = protowire.AppendString(body, token)
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+parleyv1connect.AuthServiceRefreshProcedure, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/proto")
	httpRes, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer httpRes.Body.Close()
	b, err := io.ReadAll(httpRes.Body)
	if err != nil {
		t.Fatal(err)
	}
	if httpRes.StatusCode != http.StatusOK {
		var connectErr struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(b, &connectErr); err != nil || connectErr.Code == "" {
			t.Fatalf("HTTP %d with a body that is no Connect error: %q", httpRes.StatusCode, b)
		}
		return connectErr.Code, nil
	}
	res := &parleyv1.RefreshResponse{}
	if err := proto.Unmarshal(b, res); err != nil {
		t.Fatalf("decode a Refresh response: %v", err)
	}
	return "", res
}
