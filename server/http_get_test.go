package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// A Connect GET (a NO_SIDE_EFFECTS procedure called as browsers do, to let
// responses be cached) with a flawed query is the client's fault: each
// flaw is answered with a client error and its Connect code, never with a
// 500.
func TestConnectGETWithAFlawedQueryIsAClientError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	gus := e.signUp("gus")
	for _, c := range []struct {
		name, query string
		status      int
		code        string // the Connect code in the JSON error; "" when the body is not one
	}{
		{"a valid message is served", "encoding=proto&base64=1&message=", http.StatusOK, ""},
		{"bad base64 is InvalidArgument", "encoding=proto&base64=1&message=%21%21%21%21", http.StatusBadRequest, "invalid_argument"},
		{"base64 cut short is InvalidArgument", "encoding=proto&base64=1&message=Zm9vY", http.StatusBadRequest, "invalid_argument"},
		{"bytes that are not the message are InvalidArgument", "encoding=proto&base64=1&message=_____w", http.StatusBadRequest, "invalid_argument"},
		{"bad JSON is InvalidArgument", "encoding=json&message=%7Bnot+json", http.StatusBadRequest, "invalid_argument"},
		{"an unknown encoding is an unsupported media type", "encoding=xml&message=", http.StatusUnsupportedMediaType, ""},
		{"an unknown compression is Unimplemented", "encoding=proto&base64=1&compression=br&message=", http.StatusNotImplemented, "unimplemented"},
		{"bytes that are not gzip are InvalidArgument", "encoding=proto&base64=1&compression=gzip&message=AAAA", http.StatusBadRequest, "invalid_argument"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, e.srv.URL+parleyv1connect.AuthServiceGetMeProcedure+"?connect=v1&"+c.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+gus.tokens.GetAccessToken())
			res, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != c.status {
				t.Fatalf("got HTTP %d %s, want %d", res.StatusCode, body, c.status)
			}
			if c.code == "" {
				return
			}
			var wire struct{ Code string }
			if err := json.Unmarshal(body, &wire); err != nil || wire.Code != c.code {
				t.Errorf("got body %s, want a Connect error with code %q", body, c.code)
			}
		})
	}
}
