package storage

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestContentDispositionMakesFileNamesHarmless(t *testing.T) {
	tests := []struct {
		name string
		d    Download
		want string
	}{
		{"no name is just inline", Download{}, "inline"},
		{"a plain name is quoted", Download{FileName: "report.pdf", Attachment: true}, `attachment; filename=report.pdf`},
		{"quotes, slashes and control characters go", Download{FileName: "..\\../\"evil\"\r\nX-Header: 1.html"}, `inline; filename="evilX-Header: 1.html"`},
		{"leading dots go", Download{FileName: "...bashrc"}, `inline; filename=bashrc`},
		{"other letters get an RFC 5987 form", Download{FileName: "résumé.pdf", Attachment: true},
			`attachment; filename=r_sum_.pdf; filename*=utf-8''r%C3%A9sum%C3%A9.pdf`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ContentDisposition(tc.d); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLocalRefusesWhatItDidNotSign(t *testing.T) {
	l, err := NewLocal(t.TempDir(), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	l.now = func() time.Time { return now }
	srv := httptest.NewServer(l.Handler())
	defer srv.Close()
	key := NewKey("uploads")
	up, err := l.UploadURL(context.Background(), key, "text/plain", 5, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	put := func(url, contentType, body string) int {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+url, strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	tests := []struct {
		name             string
		url, ctype, body string
		want             int
	}{
		{"another size in the URL", strings.Replace(up.URL, "size=5", "size=6", 1), "text/plain", "hello!", http.StatusForbidden},
		{"another content type", up.URL, "text/html", "hello", http.StatusBadRequest},
		{"another key", strings.Replace(up.URL, key, NewKey("uploads"), 1), "text/plain", "hello", http.StatusForbidden},
		{"a path outside the store", "/media/v1/../../etc/passwd", "text/plain", "hello", http.StatusNotFound},
		{"the signed upload", up.URL, "text/plain", "hello", http.StatusOK},
		{"a second upload to the same key", up.URL, "text/plain", "hello", http.StatusConflict},
	}
	for _, tc := range tests {
		if got := put(tc.url, tc.ctype, tc.body); got != tc.want {
			t.Errorf("%s: got HTTP %d, want %d", tc.name, got, tc.want)
		}
	}
	if n, err := l.Size(context.Background(), key); err != nil || n != 5 {
		t.Errorf("got size %d, %v; want 5", n, err)
	}
	sealed := NewKey("media")
	for range 2 {
		if err := l.Seal(context.Background(), key, sealed); err != nil {
			t.Fatalf("Seal: %v", err)
		}
	}
	if n, err := l.Size(context.Background(), sealed); err != nil || n != 5 {
		t.Errorf("got sealed size %d, %v; want 5", n, err)
	}
	if got := put(up.URL, "text/plain", "hello"); got != http.StatusConflict {
		t.Errorf("upload after the seal: got HTTP %d, want 409", got)
	}
	if err := l.Seal(context.Background(), NewKey("uploads"), NewKey("media")); !errors.Is(err, ErrNotFound) {
		t.Errorf("sealing nothing: got %v, want ErrNotFound", err)
	}
	now = now.Add(2 * time.Minute)
	if got := put(up.URL, "text/plain", "hello"); got != http.StatusForbidden {
		t.Errorf("expired upload URL: got HTTP %d, want 403", got)
	}
}
