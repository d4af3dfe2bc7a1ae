package storage

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fuzzLocal is the store the fuzz targets sign and serve URLs with: a fixed
// key and clock, so that the signed URLs in testdata/fuzz stay valid.
func fuzzLocal(tb testing.TB) *Local {
	tb.Helper()
	l, err := NewLocal(tb.TempDir(), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	l.now = func() time.Time { return now }
	return l
}

// signedRequest is what a Local URL's signature covers.
type signedRequest struct {
	method, key, expires, size, contentType, disposition string
}

// signedRequestOf is what r asks of the handler: the method its signature
// must be for and the values the handler acts on.
func signedRequestOf(r *http.Request) signedRequest {
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	q := r.URL.Query()
	return signedRequest{method, strings.TrimPrefix(r.URL.Path, LocalPrefix), q.Get(qExpires), q.Get(qSize), q.Get(qType), q.Get(qDisposition)}
}

// FuzzLocalSignedURL sends requests at mutated signed URLs to a Local
// store's handler. It holds if the handler refuses (403, 404 or 405) every
// request that is not, in what it acts on (method, key, expiry, size,
// content type and disposition, as the handler decodes them), one that the
// store signed, and accepts the URLs it signed: another spelling of the same
// request (other escaping, parameter order, parameters it ignores) grants
// nothing the signature did not.
func FuzzLocalSignedURL(f *testing.F) {
	l := fuzzLocal(f)
	ctx := context.Background()
	expires := l.now().Add(time.Hour)
	uploadKey, downloadKey := "uploads/0123456789abcdef0123456789abcdef", "media/fedcba9876543210fedcba9876543210"
	up, err := l.UploadURL(ctx, uploadKey, "image/png", 1234, expires)
	if err != nil {
		f.Fatal(err)
	}
	down, err := l.DownloadURL(ctx, downloadKey, Download{ContentType: "application/pdf", FileName: "résumé.pdf", Attachment: true, Expires: expires})
	if err != nil {
		f.Fatal(err)
	}
	if err := l.Put(ctx, downloadKey, strings.NewReader("hello"), 5, "application/pdf"); err != nil {
		f.Fatal(err)
	}
	signed := map[signedRequest]bool{}
	seeds := map[[2]string]bool{}
	for _, s := range [][2]string{{http.MethodPut, up.URL}, {http.MethodGet, down}, {http.MethodHead, down}} {
		u, err := url.ParseRequestURI(s[1])
		if err != nil {
			f.Fatal(err)
		}
		signed[signedRequestOf(&http.Request{Method: s[0], URL: u})] = true
		seeds[s] = true
		f.Add(s[0], s[1])
	}
	handler := l.Handler()
	f.Fuzz(func(t *testing.T, method, rawURL string) {
		// The HTTP server hands a handler only a request line it could parse.
		u, err := url.ParseRequestURI(rawURL)
		if err != nil {
			return
		}
		r := &http.Request{
			Method: method, URL: u, Header: http.Header{"Content-Type": {"image/png"}},
			Body: http.NoBody, Host: "example.com", RemoteAddr: "192.0.2.1:1234",
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		refused := w.Code == http.StatusForbidden || w.Code == http.StatusNotFound || w.Code == http.StatusMethodNotAllowed
		if seeds[[2]string{method, rawURL}] && refused {
			t.Fatalf("%s %s, a URL the store signed, was refused: %d %s", method, rawURL, w.Code, w.Body)
		}
		if !refused && !signed[signedRequestOf(r)] {
			t.Fatalf("%s %s was answered %d %q, though the store signed no such request: %+v", method, rawURL, w.Code, w.Body, signedRequestOf(r))
		}
	})
}

// FuzzLocalURLRoundTrip signs upload and download URLs for arbitrary content
// types, sizes, file names and expiry times. It holds if, before they
// expire, the upload URL stores exactly the bytes sent with the content type
// signed, and the download URL serves them with the signed Content-Type and
// Content-Disposition; and if, once they expire, both are refused.
func FuzzLocalURLRoundTrip(f *testing.F) {
	l := fuzzLocal(f)
	f.Add("image/png", "cat.png", false, uint8(16), int64(3600))
	f.Add("text/plain; charset=utf-8", "résumé \"final\".txt", true, uint8(0), int64(1))
	f.Add("application/octet-stream", "", true, uint8(200), int64(0))
	handler := l.Handler()
	f.Fuzz(func(t *testing.T, contentType, fileName string, attachment bool, size uint8, ttl int64) {
		ctx := context.Background()
		key := NewKey("fuzz")
		expires := time.Unix(l.now().Unix()+ttl%(1<<40), 0)
		live := l.now().Before(expires)
		body := bytes.Repeat([]byte{'x'}, int(size))
		up, err := l.UploadURL(ctx, key, contentType, int64(size), expires)
		if err != nil {
			t.Fatal(err)
		}
		code, _, _ := serve(t, handler, up.Method, up.URL, up.Headers, body)
		switch {
		case live && code != http.StatusOK:
			t.Fatalf("upload before expiry: got %d, want %d", code, http.StatusOK)
		case !live && code != http.StatusForbidden:
			t.Fatalf("upload after expiry: got %d, want %d", code, http.StatusForbidden)
		case !live:
			// Nothing stored: serve the download from a file put directly.
			if err := os.MkdirAll(filepath.Dir(mustPath(t, l, key)), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(mustPath(t, l, key), body, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		d := Download{ContentType: contentType, FileName: fileName, Attachment: attachment, Expires: expires}
		down, err := l.DownloadURL(ctx, key, d)
		if err != nil {
			t.Fatal(err)
		}
		code, h, got := serve(t, handler, http.MethodGet, down, nil, nil)
		if !live {
			if code != http.StatusForbidden {
				t.Fatalf("download after expiry: got %d, want %d", code, http.StatusForbidden)
			}
			return
		}
		if code != http.StatusOK || !bytes.Equal(got, body) {
			t.Fatalf("download: got %d %q, want %d %q", code, got, http.StatusOK, body)
		}
		if h.Get("Content-Type") != contentType || h.Get("Content-Disposition") != ContentDisposition(d) {
			t.Fatalf("download headers: got Content-Type %q, Content-Disposition %q; want %q, %q",
				h.Get("Content-Type"), h.Get("Content-Disposition"), contentType, ContentDisposition(d))
		}
	})
}

// serve sends a request for rawURL, a URL the store made, to handler.
func serve(t *testing.T, handler http.Handler, method, rawURL string, header map[string]string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	u, err := url.ParseRequestURI(rawURL)
	if err != nil {
		t.Fatalf("the store made a URL a server cannot parse: %q: %v", rawURL, err)
	}
	r := &http.Request{
		Method: method, URL: u, Header: http.Header{}, Host: "example.com", RemoteAddr: "192.0.2.1:1234",
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, r)
	return w.Code, w.Header(), w.Body.Bytes()
}

func mustPath(t *testing.T, l *Local, key string) string {
	t.Helper()
	p, err := l.path(key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
