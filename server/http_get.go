package server

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// withGETMessageCheck refuses, as InvalidArgument, a Connect GET whose
// message parameter is not the URL-safe base64 its base64=1 says it is.
// connect-go decodes that parameter as it reads it, like a body, and
// reports a failed read as Unknown (HTTP 500), before any interceptor can
// see it; every other flaw of a GET (encoding, compression, the message
// itself) it already reports with a client error.
func withGETMessageCheck(h http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			if q := r.URL.Query(); q.Get("base64") == "1" && !validQueryBase64(q.Get("message")) {
				_ = errs.Write(w, r, connect.NewError(connect.CodeInvalidArgument, errors.New("message is not valid URL-safe base64")))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// validQueryBase64 reports whether s decodes as connect-go decodes it:
// padded when its length is a multiple of four, else unpadded.
func validQueryBase64(s string) bool {
	enc := base64.URLEncoding
	if len(s)%4 != 0 {
		enc = base64.RawURLEncoding
	}
	_, err := io.Copy(io.Discard, base64.NewDecoder(enc, strings.NewReader(s)))
	return err == nil
}
