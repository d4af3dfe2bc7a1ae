// Package storage keeps the bytes of uploaded media: on the local filesystem,
// where Parley itself accepts uploads and serves downloads at signed,
// expiring URLs, or in an S3-compatible bucket through presigned URLs. It
// knows nothing of users, messages or Connect; the server decides who may
// have which URL.
package storage

import (
	"context"
	"errors"
	"io"
	"mime"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// ErrNotFound is returned for an object that is not stored.
var ErrNotFound = errors.New("storage: object not found")

// Store is where media objects live. Keys are chosen by the caller and match
// KeyPattern: random, never a client's file name.
type Store interface {
	// UploadURL returns how a client sends exactly size bytes of
	// contentType to key, in one request, until expires.
	UploadURL(ctx context.Context, key, contentType string, size int64, expires time.Time) (Upload, error)
	// DownloadURL returns a URL that fetches key with a plain GET until
	// expires. A local store's URLs are relative to the server's own
	// address; an S3 store's are absolute.
	DownloadURL(ctx context.Context, key string, d Download) (string, error)
	// Size returns the stored object's size, or ErrNotFound.
	Size(ctx context.Context, key string) (int64, error)
	// Open reads a stored object, or fails with ErrNotFound.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// Put stores size bytes from r at key.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Seal makes the object a client wrote at upload (through its
	// UploadURL) the object at key, which no client can write, such that
	// nothing written to upload afterwards reaches key. ErrNotFound when
	// upload is absent. Sealing again what was sealed already is no error.
	Seal(ctx context.Context, upload, key string) error
	// Delete removes an object; an absent object is not an error.
	Delete(ctx context.Context, key string) error
}

// Upload is how to send an object's bytes.
type Upload struct {
	URL     string
	Method  string
	Headers map[string]string
}

// Download is how a download is served.
type Download struct {
	ContentType string
	// FileName is offered to the browser, sanitised; empty offers none.
	FileName string
	// Attachment asks the browser to save the file rather than show it.
	Attachment bool
	Expires    time.Time
}

// KeyPattern is what every object key looks like: a lower-case prefix and 32
// hex digits, so that a key is never a path outside the store.
var KeyPattern = regexp.MustCompile(`^[a-z]{1,16}/[0-9a-f]{32}$`)

// ContentDisposition is the Content-Disposition header of a download:
// "inline" or "attachment" with the file name made harmless (no quotes,
// separators or control characters), in ASCII and, when it has other
// letters, in RFC 5987 form too.
func ContentDisposition(d Download) string {
	disp := "inline"
	if d.Attachment {
		disp = "attachment"
	}
	name := SanitizeFileName(d.FileName)
	if name == "" {
		return disp
	}
	ascii := strings.Map(func(r rune) rune {
		if r > unicode.MaxASCII {
			return '_'
		}
		return r
	}, name)
	out := mime.FormatMediaType(disp, map[string]string{"filename": ascii})
	if ascii != name {
		// FormatMediaType writes a non-ASCII value as filename*=utf-8''….
		out += "; " + strings.TrimPrefix(mime.FormatMediaType("x", map[string]string{"filename": name}), "x; ")
	}
	return out
}

// SanitizeFileName drops what could break a header or name a path: control
// characters, quotes, backslashes, slashes and other separators, and leading
// dots; it keeps at most 200 runes.
func SanitizeFileName(name string) string {
	name = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsControl(r), r == '"', r == '\\', r == '/', r == ';', r == '%', r == unicode.ReplacementChar:
			return -1
		case unicode.IsSpace(r):
			return ' '
		}
		return r
	}, name)
	name = strings.TrimLeft(strings.TrimSpace(name), ".")
	if r := []rune(name); len(r) > 200 {
		name = string(r[:200])
	}
	return name
}
