package storage

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// LocalPrefix is the path under which a Local store's Handler serves.
const LocalPrefix = "/media/v1/"

// Local keeps objects as files under a directory. Uploads and downloads go
// through Handler, at URLs signed with a key that every node shares, so a
// URL made by one node works on any other that sees the same directory.
type Local struct {
	dir string
	key []byte
	now func() time.Time
}

// NewLocal returns a store under dir, creating it when missing. key signs
// the URLs; it must be at least 32 bytes.
func NewLocal(dir string, key []byte) (*Local, error) {
	if len(key) < 32 {
		return nil, errors.New("storage: signing key shorter than 32 bytes")
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o750); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", dir, err)
	}
	return &Local{dir: dir, key: key, now: time.Now}, nil
}

// path is where key's file lives: <dir>/<prefix>/<first two hex digits>/<hex>,
// so that no directory holds more than a 256th of the objects.
func (l *Local) path(key string) (string, error) {
	if !KeyPattern.MatchString(key) {
		return "", fmt.Errorf("storage: bad key %q", key)
	}
	prefix, name, _ := strings.Cut(key, "/")
	return filepath.Join(l.dir, prefix, name[:2], name), nil
}

// The signed query parameters of a URL.
const (
	qExpires     = "exp"
	qSize        = "size"
	qType        = "type"
	qDisposition = "disp"
	qSignature   = "sig"
)

// sign is the HMAC of a request's method, key and parameters; the
// parameters are written length-prefixed so no two sets sign alike.
func (l *Local) sign(method, key string, q url.Values) string {
	m := hmac.New(sha256.New, l.key)
	for _, s := range []string{method, key, q.Get(qExpires), q.Get(qSize), q.Get(qType), q.Get(qDisposition)} {
		fmt.Fprintf(m, "%d:%s\n", len(s), s)
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (l *Local) signedURL(method, key string, q url.Values) string {
	q.Set(qSignature, l.sign(method, key, q))
	return LocalPrefix + key + "?" + q.Encode()
}

func (l *Local) UploadURL(_ context.Context, key, contentType string, size int64, expires time.Time) (Upload, error) {
	if _, err := l.path(key); err != nil {
		return Upload{}, err
	}
	q := url.Values{qExpires: {strconv.FormatInt(expires.Unix(), 10)}, qSize: {strconv.FormatInt(size, 10)}, qType: {contentType}}
	return Upload{URL: l.signedURL(http.MethodPut, key, q), Method: http.MethodPut, Headers: map[string]string{"Content-Type": contentType}}, nil
}

func (l *Local) DownloadURL(_ context.Context, key string, d Download) (string, error) {
	if _, err := l.path(key); err != nil {
		return "", err
	}
	q := url.Values{qExpires: {strconv.FormatInt(d.Expires.Unix(), 10)}, qType: {d.ContentType}, qDisposition: {ContentDisposition(d)}}
	return l.signedURL(http.MethodGet, key, q), nil
}

func (l *Local) Size(_ context.Context, key string) (int64, error) {
	p, err := l.path(key)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	return fi.Size(), nil
}

func (l *Local) Open(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return f, nil
}

func (l *Local) Put(_ context.Context, key string, r io.Reader, size int64, _ string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	n, err := l.write(p, r, false)
	if err != nil {
		return err
	}
	if n != size {
		_ = os.Remove(p)
		return fmt.Errorf("storage: wrote %d bytes of %d", n, size)
	}
	return nil
}

// write stores r at p through a temporary file, so that p never holds part
// of an object. With once it refuses to replace an existing p.
func (l *Local) write(p string, r io.Reader, once bool) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(l.dir, "tmp"), "put-*")
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone already after a successful rename or link
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	if once {
		if err := os.Link(tmp.Name(), p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return n, errExists
			}
			return n, fmt.Errorf("storage: %w", err)
		}
		return n, nil
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return n, fmt.Errorf("storage: %w", err)
	}
	return n, nil
}

var errExists = errors.New("storage: object exists")

// Seal links upload's file at key and leaves it in place: an upload URL
// writes its key once (a second PUT finds the file and is refused), so while
// the file stays, until the sweeper deletes it when the URL has expired, the
// URL takes no more bytes. Both names share one file that nothing writes
// again, so no copy is made.
func (l *Local) Seal(_ context.Context, upload, key string) error {
	src, err := l.path(upload)
	if err != nil {
		return err
	}
	dst, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	err = os.Link(src, dst)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return ErrNotFound
	case errors.Is(err, fs.ErrExist):
		// Sealed before, by a completion that did not finish.
		a, aerr := os.Stat(src)
		b, berr := os.Stat(dst)
		if aerr == nil && berr == nil && os.SameFile(a, b) {
			return nil
		}
	}
	return fmt.Errorf("storage: seal %s: %w", upload, err)
}

func (l *Local) Delete(_ context.Context, key string) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// Handler serves uploads (PUT) and downloads (GET, HEAD, with ranges) at the
// URLs the store signed, under LocalPrefix. It needs no other
// authentication: the signature is the permission.
func (l *Local) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, LocalPrefix)
		p, err := l.path(key)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		if method != http.MethodGet && method != http.MethodPut {
			w.Header().Set("Allow", "GET, HEAD, PUT")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		if !hmac.Equal([]byte(q.Get(qSignature)), []byte(l.sign(method, key, q))) {
			http.Error(w, "signature does not match", http.StatusForbidden)
			return
		}
		exp, err := strconv.ParseInt(q.Get(qExpires), 10, 64)
		if err != nil || l.now().Unix() >= exp {
			http.Error(w, "this URL has expired", http.StatusForbidden)
			return
		}
		if method == http.MethodPut {
			l.serveUpload(w, r, p, q)
			return
		}
		l.serveDownload(w, r, p, q)
	})
}

func (l *Local) serveUpload(w http.ResponseWriter, r *http.Request, p string, q url.Values) {
	size, err := strconv.ParseInt(q.Get(qSize), 10, 64)
	if err != nil {
		http.Error(w, "bad size", http.StatusBadRequest)
		return
	}
	if r.Header.Get("Content-Type") != q.Get(qType) {
		http.Error(w, "Content-Type must be "+q.Get(qType), http.StatusBadRequest)
		return
	}
	// Refuse a declared length that does not fit before reading anything:
	// the client is not even told to continue (Expect: 100-continue).
	switch {
	case r.ContentLength > size:
		http.Error(w, fmt.Sprintf("body is larger than the %d bytes declared", size), http.StatusRequestEntityTooLarge)
		return
	case r.ContentLength >= 0 && r.ContentLength != size:
		http.Error(w, fmt.Sprintf("body must be exactly %d bytes", size), http.StatusBadRequest)
		return
	}
	if _, err := os.Stat(p); err == nil {
		http.Error(w, "already uploaded", http.StatusConflict)
		return
	}
	body := http.MaxBytesReader(w, r.Body, size)
	n, err := l.write(p, body, true)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(w, fmt.Sprintf("body is larger than the %d bytes declared", size), http.StatusRequestEntityTooLarge)
	case errors.Is(err, errExists):
		http.Error(w, "already uploaded", http.StatusConflict)
	case err != nil:
		http.Error(w, "upload failed", http.StatusInternalServerError)
	case n != size:
		_ = os.Remove(p)
		http.Error(w, fmt.Sprintf("body must be exactly %d bytes", size), http.StatusBadRequest)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

func (l *Local) serveDownload(w http.ResponseWriter, r *http.Request, p string, q url.Values) {
	f, err := os.Open(p)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "read failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", q.Get(qType))
	h.Set("Content-Disposition", q.Get(qDisposition))
	h.Set("X-Content-Type-Options", "nosniff")
	// The bytes are users': nothing in them may run as this origin.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	h.Set("Cache-Control", "private, max-age=300")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// NewKey returns a random key under prefix (a-z).
func NewKey(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return prefix + "/" + fmt.Sprintf("%x", b)
}
