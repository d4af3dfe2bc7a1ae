package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach an S3-compatible bucket.
type S3Config struct {
	// Endpoint is the service's URL, such as https://s3.eu-west-1.amazonaws.com
	// or http://127.0.0.1:9000. Clients download from and upload to it
	// directly, so it must be the address they can reach.
	Endpoint  string
	Bucket    string
	AccessKey string
	SecretKey string
	Region    string
	// PathStyle addresses the bucket in the path (endpoint/bucket/key)
	// instead of the host name (bucket.endpoint/key); most self-hosted
	// servers need it.
	PathStyle bool
}

// S3 keeps objects in a bucket and hands out presigned URLs.
//
// An upload is one presigned PUT whose signature covers Content-Type and
// Content-Length, so the service itself refuses a body of another size. S3
// takes up to 5 GiB in one PUT, far above Parley's largest media, so
// uploads need no multipart.
type S3 struct {
	c      *minio.Client
	bucket string
	now    func() time.Time
}

// NewS3 connects to the bucket, creating it when it does not exist.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("storage: S3 endpoint %q must be an http or https URL", cfg.Endpoint)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("storage: S3 bucket not set")
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("storage: S3 client: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("storage: S3 bucket %s: %w", cfg.Bucket, err)
	}
	if !ok {
		if err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("storage: create S3 bucket %s: %w", cfg.Bucket, err)
		}
	}
	return &S3{c: c, bucket: cfg.Bucket, now: time.Now}, nil
}

func (s *S3) ttl(expires time.Time) time.Duration {
	return max(expires.Sub(s.now()).Round(time.Second), time.Second)
}

func (s *S3) UploadURL(ctx context.Context, key, contentType string, size int64, expires time.Time) (Upload, error) {
	if !KeyPattern.MatchString(key) {
		return Upload{}, fmt.Errorf("storage: bad key %q", key)
	}
	signed := http.Header{"Content-Type": {contentType}, "Content-Length": {strconv.FormatInt(size, 10)}}
	u, err := s.c.PresignHeader(ctx, http.MethodPut, s.bucket, key, s.ttl(expires), nil, signed)
	if err != nil {
		return Upload{}, fmt.Errorf("storage: presign PUT: %w", err)
	}
	// Content-Length is signed too; every HTTP client sends it for a body
	// of known size, and browsers refuse to set it by hand.
	return Upload{URL: u.String(), Method: http.MethodPut, Headers: map[string]string{"Content-Type": contentType}}, nil
}

func (s *S3) DownloadURL(ctx context.Context, key string, d Download) (string, error) {
	params := url.Values{
		"response-content-type":        {d.ContentType},
		"response-content-disposition": {ContentDisposition(d)},
	}
	u, err := s.c.PresignedGetObject(ctx, s.bucket, key, s.ttl(d.Expires), params)
	if err != nil {
		return "", fmt.Errorf("storage: presign GET: %w", err)
	}
	return u.String(), nil
}

func notFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == minio.NoSuchKey || code == "NotFound" || strings.Contains(code, "NoSuchKey")
}

func (s *S3) Size(ctx context.Context, key string) (int64, error) {
	info, err := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if notFound(err) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("storage: stat %s: %w", key, err)
	}
	return info.Size, nil
}

func (s *S3) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := s.c.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err == nil {
		_, err = obj.Stat() // GetObject is lazy: learn now whether it exists
	}
	if notFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", key, err)
	}
	return obj, nil
}

func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	if _, err := s.c.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{ContentType: contentType}); err != nil {
		return fmt.Errorf("storage: put %s: %w", key, err)
	}
	return nil
}

// Seal copies upload to key on the server side, which reads one whole
// version of upload (a PUT replaces an object at once), then deletes upload.
// A presigned URL cannot be revoked: until it expires a client may PUT to
// upload again, but nothing reads those bytes, and the sweeper deletes them.
// Sealing again finds upload gone and key in place.
func (s *S3) Seal(ctx context.Context, upload, key string) error {
	_, err := s.c.CopyObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: key}, minio.CopySrcOptions{Bucket: s.bucket, Object: upload})
	if notFound(err) {
		if _, serr := s.Size(ctx, key); serr == nil {
			return nil
		}
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("storage: copy %s: %w", upload, err)
	}
	return s.Delete(ctx, upload)
}

func (s *S3) Delete(ctx context.Context, key string) error {
	err := s.c.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && !notFound(err) {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	return nil
}
