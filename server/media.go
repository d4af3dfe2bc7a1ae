package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/semaphore"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parley-chat/parley/db"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/storage"
)

// MediaConfig are the media tunables: where the bytes live and what uploads
// may be.
type MediaConfig struct {
	// Dir is the local store's directory, used when S3 has no endpoint.
	Dir string
	// S3, when its Endpoint is set, keeps media in an S3-compatible bucket.
	S3 storage.S3Config
	// PublicURL is the address clients reach this server at (such as
	// https://chat.example.com), which the local store's upload and
	// download URLs start with; empty takes it from each request.
	PublicURL string
	// MaxImageBytes, MaxVoiceBytes, MaxVideoBytes and MaxFileBytes bound
	// an upload's size by kind.
	MaxImageBytes, MaxVoiceBytes, MaxVideoBytes, MaxFileBytes int64
	// MaxVoiceDuration bounds a voice note's declared duration.
	MaxVoiceDuration time.Duration
	// ImageTypes, VoiceTypes, VideoTypes and FileTypes are the content
	// types each kind allows ("*" any, "audio/*" a family).
	ImageTypes, VoiceTypes, VideoTypes, FileTypes []string
	// DecodeBudget is how many bytes of memory decoding images for their
	// thumbnails may take at once, shared by every upload on this node;
	// an image whose decoding would take more than all of it is stored
	// without a thumbnail. DecodeWait is how long a completion waits for
	// its share before storing its image without a thumbnail.
	DecodeBudget int64
	DecodeWait   time.Duration
	// UploadTTL is how long an upload URL works and an upload may be
	// completed; URLTTL is how long a download URL works.
	UploadTTL, URLTTL time.Duration
	// SweepInterval is how often expired uploads are deleted.
	SweepInterval time.Duration
	// UploadsPerUser throttles CreateUpload per user.
	UploadsPerUser Rate

	// afterCheck, when set, is called when CompleteUpload has checked an
	// upload's bytes and before it makes the media ready: tests pause a
	// completion there to race another against it.
	afterCheck func(ctx context.Context, mediaID string)
}

// DefaultMediaConfig returns the production media configuration without a
// directory.
func DefaultMediaConfig() MediaConfig {
	return MediaConfig{
		MaxImageBytes:    20 << 20,
		MaxVoiceBytes:    10 << 20,
		MaxVideoBytes:    200 << 20,
		MaxFileBytes:     500 << 20,
		MaxVoiceDuration: 5 * time.Minute,
		ImageTypes:       []string{"image/jpeg", "image/png", "image/gif", "image/webp"},
		VoiceTypes: []string{"audio/ogg", "audio/opus", "audio/webm", "audio/mpeg", "audio/mp4", "audio/m4a",
			"audio/x-m4a", "audio/aac", "audio/amr", "audio/wav", "audio/x-wav", "audio/flac"},
		VideoTypes:     []string{"video/mp4", "video/webm", "video/quicktime", "video/3gpp"},
		FileTypes:      []string{"*"},
		DecodeBudget:   64 << 20,
		DecodeWait:     10 * time.Second,
		UploadTTL:      time.Hour,
		URLTTL:         10 * time.Minute,
		SweepInterval:  time.Minute,
		UploadsPerUser: Rate{Burst: 120, Per: 10 * time.Minute},
	}
}

// maxThumbnailBytes bounds a client's own thumbnail (CreateUpload's
// thumbnail_media_id).
const maxThumbnailBytes = 1 << 20

const (
	mediaPending int16 = 1
	mediaReady   int16 = 2
)

const mediaSecretName = "media_url_hmac_sha256"

// newStore opens the configured store: S3 when it has an endpoint, else the
// local directory with a URL signing key every node reads from the database.
func newStore(ctx context.Context, d *db.DB, cfg MediaConfig) (storage.Store, *storage.Local, error) {
	if cfg.S3.Endpoint != "" {
		s, err := storage.NewS3(ctx, cfg.S3)
		return s, nil, err
	}
	if cfg.Dir == "" {
		return nil, nil, errors.New("media: set a directory or an S3 endpoint")
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, fmt.Errorf("generate media key: %w", err)
	}
	// The first node to start creates the key; every later one reads it.
	if err := d.InsertServerSecret(ctx, db.InsertServerSecretParams{Name: mediaSecretName, Secret: secret}); err != nil {
		return nil, nil, fmt.Errorf("store media key: %w", err)
	}
	key, err := d.GetServerSecret(ctx, mediaSecretName)
	if err != nil {
		return nil, nil, fmt.Errorf("load media key: %w", err)
	}
	l, err := storage.NewLocal(cfg.Dir, key)
	return l, l, err
}

// mediaService implements parley.v1.MediaService.
type mediaService struct {
	parleyv1connect.UnimplementedMediaServiceHandler

	db      *db.DB
	store   storage.Store
	cfg     MediaConfig
	uploads *keyedLimiter
	decode  *semaphore.Weighted // DecodeBudget, in bytes
	logger  *slog.Logger
}

func newMediaService(d *db.DB, store storage.Store, cfg MediaConfig, logger *slog.Logger) *mediaService {
	return &mediaService{
		db:      d,
		store:   store,
		cfg:     cfg,
		uploads: newKeyedLimiter(cfg.UploadsPerUser, 100_000),
		decode:  semaphore.NewWeighted(cfg.DecodeBudget),
		logger:  logger.With("component", "media"),
	}
}

func (s *mediaService) kindLimit(k parleyv1.MediaKind) (int64, []string) {
	switch k {
	case parleyv1.MediaKind_MEDIA_KIND_IMAGE:
		return s.cfg.MaxImageBytes, s.cfg.ImageTypes
	case parleyv1.MediaKind_MEDIA_KIND_VOICE:
		return s.cfg.MaxVoiceBytes, s.cfg.VoiceTypes
	case parleyv1.MediaKind_MEDIA_KIND_VIDEO:
		return s.cfg.MaxVideoBytes, s.cfg.VideoTypes
	default:
		return s.cfg.MaxFileBytes, s.cfg.FileTypes
	}
}

func (s *mediaService) CreateUpload(ctx context.Context, req *parleyv1.CreateUploadRequest) (*parleyv1.CreateUploadResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	kind := req.GetKind()
	limit, types := s.kindLimit(kind)
	if req.GetSizeBytes() > limit {
		return nil, invalidArgument("size_bytes", "parley.media_size", fmt.Sprintf("must be at most %d bytes for this kind of media", limit))
	}
	ct := baseType(req.GetContentType())
	if ct == "" {
		return nil, invalidArgument("content_type", "parley.media_type", "must be a MIME type such as image/png")
	}
	if !typeAllowed(ct, types) {
		return nil, invalidArgument("content_type", "parley.media_type", fmt.Sprintf("%s is not allowed for this kind; allowed: %v", ct, types))
	}
	var durationMs *int64
	if d := req.GetDuration(); d != nil {
		switch kind {
		case parleyv1.MediaKind_MEDIA_KIND_VOICE:
			if d.AsDuration() > s.cfg.MaxVoiceDuration {
				return nil, invalidArgument("duration", "parley.media_duration", fmt.Sprintf("a voice note plays at most %s", s.cfg.MaxVoiceDuration))
			}
		case parleyv1.MediaKind_MEDIA_KIND_VIDEO:
		default:
			return nil, invalidArgument("duration", "parley.media_duration", "only voice and video have a duration")
		}
		ms := d.AsDuration().Milliseconds()
		durationMs = &ms
	}
	var width, height int32
	if kind == parleyv1.MediaKind_MEDIA_KIND_VIDEO {
		width, height = req.GetWidth(), req.GetHeight() // an image's are measured at completion
	}
	var thumbID *string
	if id := req.GetThumbnailMediaId(); id != "" {
		if kind != parleyv1.MediaKind_MEDIA_KIND_IMAGE && kind != parleyv1.MediaKind_MEDIA_KIND_VIDEO {
			return nil, invalidArgument("thumbnail_media_id", "parley.media_thumbnail", "only images and videos have a thumbnail")
		}
		t, err := s.db.GetMedia(ctx, id)
		if db.IsNoRows(err) || err == nil && t.UploaderID != c.UserID {
			return nil, errThumbnailNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("get thumbnail: %w", err)
		}
		if t.State != mediaReady || t.Kind != int16(parleyv1.MediaKind_MEDIA_KIND_IMAGE) || t.SizeBytes > maxThumbnailBytes {
			return nil, errThumbnailUnfit
		}
		thumbID = &id
	}
	if ok, wait := s.uploads.allow(c.UserID, time.Now()); !ok {
		return nil, resourceExhausted("too many uploads; wait", wait)
	}
	uploadKey := storage.NewKey("uploads")
	expires := ceilSecond(time.Now().Add(s.cfg.UploadTTL))
	up, err := s.store.UploadURL(ctx, uploadKey, req.GetContentType(), req.GetSizeBytes(), expires)
	if err != nil {
		return nil, err
	}
	m, err := s.db.CreateMedia(ctx, db.CreateMediaParams{
		UploaderID:       c.UserID,
		Kind:             int16(kind),
		ContentType:      req.GetContentType(),
		SizeBytes:        req.GetSizeBytes(),
		Sha256:           req.GetSha256(),
		FileName:         req.GetFileName(),
		Width:            width,
		Height:           height,
		DurationMs:       durationMs,
		ThumbnailMediaID: thumbID,
		UploadKey:        &uploadKey,
		StorageKey:       storage.NewKey("media"),
		ExpiresAt:        expires,
	})
	if err != nil {
		return nil, fmt.Errorf("create media: %w", err)
	}
	return &parleyv1.CreateUploadResponse{
		MediaId:      m.ID,
		UploadUrl:    s.absolute(ctx, up.URL),
		UploadMethod: up.Method,
		Headers:      up.Headers,
		ExpireTime:   timestamppb.New(expires),
	}, nil
}

func (s *mediaService) CompleteUpload(ctx context.Context, req *parleyv1.CompleteUploadRequest) (*parleyv1.CompleteUploadResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.db.GetMedia(ctx, req.GetMediaId())
	if db.IsNoRows(err) || err == nil && m.UploaderID != c.UserID {
		return nil, errMediaNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get media: %w", err)
	}
	if m.State == mediaReady {
		return &parleyv1.CompleteUploadResponse{Media: mediaToProto(m)}, nil
	}
	if !time.Now().Before(m.ExpiresAt) {
		return nil, errUploadExpired
	}
	// One call at a time completes an upload: the claim is taken in the
	// database, so it holds across nodes, and a second call is told so
	// instead of moving, reading or deleting the bytes under the first.
	m, err = s.db.ClaimUpload(ctx, m.ID)
	if db.IsNoRows(err) {
		if m, err := s.db.GetMedia(ctx, req.GetMediaId()); err == nil && m.State == mediaReady {
			return &parleyv1.CompleteUploadResponse{Media: mediaToProto(m)}, nil
		}
		return nil, errUploadCompleting
	}
	if err != nil {
		return nil, fmt.Errorf("claim upload: %w", err)
	}
	out, err := s.completeClaimed(ctx, m)
	if err != nil {
		// Hand the upload back so that CompleteUpload may be called again.
		// Refused bytes stay refused: the local store's upload key keeps
		// them, and S3's has none until the client sends new ones.
		if rerr := s.db.ReleaseUpload(context.WithoutCancel(ctx), m.ID); rerr != nil {
			s.logger.WarnContext(ctx, "release upload", "media_id", m.ID, "error", rerr)
		}
		return nil, err
	}
	return &parleyv1.CompleteUploadResponse{Media: mediaToProto(out)}, nil
}

// completeClaimed checks the bytes of an upload this call claimed and makes
// the media ready.
func (s *mediaService) completeClaimed(ctx context.Context, m db.Medium) (db.Medium, error) {
	// The bytes are checked where only the server writes, so what was
	// checked is what is served: sealing the upload key leaves nothing a
	// client writes to it afterwards able to reach the storage key.
	if m.UploadKey != nil {
		err := s.store.Seal(ctx, *m.UploadKey, m.StorageKey)
		if errors.Is(err, storage.ErrNotFound) {
			return db.Medium{}, errNothingUploaded
		}
		if err != nil {
			return db.Medium{}, err
		}
	}
	done, err := s.check(ctx, m)
	if err == nil && s.cfg.afterCheck != nil {
		s.cfg.afterCheck(ctx, m.ID)
	}
	if err != nil {
		var refused *uploadRefused
		if errors.As(err, &refused) {
			// The bytes are wrong for good: drop them. The row expires.
			if derr := s.store.Delete(ctx, m.StorageKey); derr != nil {
				s.logger.WarnContext(ctx, "delete refused upload", "media_id", m.ID, "error", derr)
			}
			return db.Medium{}, refused.err
		}
		return db.Medium{}, err
	}
	return s.complete(ctx, m, done)
}

// uploadRefused is a check the uploaded bytes failed; err is what the
// client is told.
type uploadRefused struct{ err error }

func (e *uploadRefused) Error() string { return e.err.Error() }

func refuse(err error) error { return &uploadRefused{err: err} }

// checked is what reading an upload found.
type checked struct {
	width, height int32
	thumb         *thumbnail
}

// check reads the stored bytes of m: their size, format and checksum, and
// for an image its dimensions and, unless the client brought its own, a
// thumbnail.
func (s *mediaService) check(ctx context.Context, m db.Medium) (checked, error) {
	out := checked{width: m.Width, height: m.Height}
	size, err := s.store.Size(ctx, m.StorageKey)
	if errors.Is(err, storage.ErrNotFound) {
		return out, errNothingUploaded
	}
	if err != nil {
		return out, err
	}
	if size != m.SizeBytes {
		return out, refuse(errUploadSize)
	}
	r, err := s.store.Open(ctx, m.StorageKey)
	if err != nil {
		return out, err
	}
	defer r.Close()
	kind := parleyv1.MediaKind(m.Kind)
	isImage := kind == parleyv1.MediaKind_MEDIA_KIND_IMAGE
	// The bytes stream through once, into the checksum and, for an image,
	// its header: nothing holds a whole upload in memory.
	h := sha256.New()
	var n int64
	head := &prefix{max: imageHeadLen}
	body := io.TeeReader(io.LimitReader(r, m.SizeBytes+1), io.MultiWriter(h, (*counter)(&n), head))
	sniffed := make([]byte, sniffLen)
	k, err := io.ReadFull(body, sniffed)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return out, fmt.Errorf("read upload: %w", err)
	}
	_, types := s.kindLimit(kind)
	if err := checkContent(kind, m.ContentType, sniffed[:k], types); err != nil {
		return out, refuse(connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("the uploaded bytes were refused: %w; create a new upload", err)))
	}
	var cfg image.Config
	var format string
	var cfgErr error
	if isImage {
		cfg, format, cfgErr = image.DecodeConfig(io.MultiReader(bytes.NewReader(sniffed[:k]), body))
	}
	if m.Sha256 != "" || isImage {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return out, fmt.Errorf("read upload: %w", err)
		}
		if n != m.SizeBytes {
			return out, refuse(errUploadSize)
		}
		if m.Sha256 != "" && hex.EncodeToString(h.Sum(nil)) != m.Sha256 {
			return out, refuse(errUploadChecksum)
		}
	}
	if !isImage {
		return out, nil
	}
	if cfgErr != nil || "image/"+format != sniff(sniffed[:k]) || cfg.Width <= 0 || cfg.Height <= 0 {
		return out, refuse(errImageUndecodable)
	}
	// Width and height are as the picture is shown: turned by its EXIF
	// orientation, as the thumbnail is.
	orientation := jpegOrientation(head.b)
	out.width, out.height = int32(cfg.Width), int32(cfg.Height)
	if orientation >= 5 {
		out.width, out.height = out.height, out.width
	}
	if m.ThumbnailMediaID != nil {
		return out, nil
	}
	thumb, err := s.thumbnail(ctx, m, format, cfg, head.b, orientation)
	if err != nil {
		return out, err
	}
	out.thumb = thumb
	return out, nil
}

// imageHeadLen is how much of an image check keeps to read its EXIF
// orientation and JPEG frame header, which come before the image data.
const imageHeadLen = 256 << 10

// thumbnail decodes the image at m's storage key within the decode budget
// and makes its thumbnail; none when decoding it would take more than the
// whole budget, or when the budget stays busy for DecodeWait.
func (s *mediaService) thumbnail(ctx context.Context, m db.Medium, format string, cfg image.Config, head []byte, orientation int) (*thumbnail, error) {
	if format == "webp" && webpAnimated(head) {
		return nil, nil // x/image/webp decodes no animation: stored as it is
	}
	cost := decodeCost(format, cfg, head, m.SizeBytes)
	log := s.logger.With("media_id", m.ID, "format", format, "width", cfg.Width, "height", cfg.Height, "decode_bytes", cost)
	if cost > s.cfg.DecodeBudget {
		log.InfoContext(ctx, "image over the decode budget: stored without a thumbnail")
		return nil, nil
	}
	wait, cancel := context.WithTimeout(ctx, s.cfg.DecodeWait)
	err := s.decode.Acquire(wait, cost)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.WarnContext(ctx, "decode budget busy: image stored without a thumbnail", "waited", s.cfg.DecodeWait)
		return nil, nil
	}
	defer s.decode.Release(cost)
	r, err := s.store.Open(ctx, m.StorageKey)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	img, err := decodeImage(r, cfg)
	if err != nil {
		return nil, refuse(errImageUndecodable)
	}
	t, err := makeThumbnail(img, orientation)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// counter counts the bytes written to it.
type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

// prefix keeps the first max bytes written to it.
type prefix struct {
	b   []byte
	max int
}

func (p *prefix) Write(b []byte) (int, error) {
	if room := p.max - len(p.b); room > 0 {
		p.b = append(p.b, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

// complete stores the thumbnail and makes m, which this call claimed, ready.
func (s *mediaService) complete(ctx context.Context, m db.Medium, c checked) (db.Medium, error) {
	var thumbKey string
	if c.thumb != nil {
		thumbKey = storage.NewKey("media")
		if err := s.store.Put(ctx, thumbKey, bytes.NewReader(c.thumb.data), int64(len(c.thumb.data)), c.thumb.contentType); err != nil {
			return db.Medium{}, err
		}
	}
	var out db.Medium
	err := s.db.Tx(ctx, func(q *db.Queries) error {
		thumbID := m.ThumbnailMediaID
		if c.thumb != nil {
			t, err := q.InsertThumbnail(ctx, db.InsertThumbnailParams{
				UploaderID:  m.UploaderID,
				ContentType: c.thumb.contentType,
				SizeBytes:   int64(len(c.thumb.data)),
				FileName:    "thumbnail",
				Width:       int32(c.thumb.width),
				Height:      int32(c.thumb.height),
				StorageKey:  thumbKey,
			})
			if err != nil {
				return fmt.Errorf("insert thumbnail: %w", err)
			}
			thumbID = &t.ID
		}
		var err error
		out, err = q.CompleteMedia(ctx, db.CompleteMediaParams{ID: m.ID, Width: c.width, Height: c.height, ThumbnailMediaID: thumbID})
		if db.IsNoRows(err) {
			return errUploadExpired // the sweeper took it meanwhile
		}
		if err != nil {
			return fmt.Errorf("complete media: %w", err)
		}
		return nil
	})
	if err == nil {
		return out, nil
	}
	if thumbKey != "" {
		if derr := s.store.Delete(context.WithoutCancel(ctx), thumbKey); derr != nil {
			s.logger.WarnContext(ctx, "delete unused thumbnail", "media_id", m.ID, "error", derr)
		}
	}
	return db.Medium{}, err
}

func (s *mediaService) GetMedia(ctx context.Context, req *parleyv1.GetMediaRequest) (*parleyv1.GetMediaResponse, error) {
	c, err := mustCaller(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.db.GetMedia(ctx, req.GetMediaId())
	if db.IsNoRows(err) {
		return nil, errMediaNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get media: %w", err)
	}
	if m.UploaderID != c.UserID {
		ok, err := s.db.MediaVisible(ctx, db.MediaVisibleParams{MediaID: m.ID, UserID: c.UserID})
		if err != nil {
			return nil, fmt.Errorf("check media access: %w", err)
		}
		if !ok {
			return nil, errMediaNotFound
		}
	}
	if m.State != mediaReady {
		return nil, errMediaNotReady
	}
	expires := ceilSecond(time.Now().Add(s.cfg.URLTTL))
	res := &parleyv1.GetMediaResponse{Media: mediaToProto(m), ExpireTime: timestamppb.New(expires)}
	if res.DownloadUrl, err = s.downloadURL(ctx, m, expires); err != nil {
		return nil, err
	}
	if m.ThumbnailMediaID != nil {
		t, err := s.db.GetMedia(ctx, *m.ThumbnailMediaID)
		if err != nil {
			return nil, fmt.Errorf("get thumbnail: %w", err)
		}
		if res.ThumbnailUrl, err = s.downloadURL(ctx, t, expires); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (s *mediaService) downloadURL(ctx context.Context, m db.Medium, expires time.Time) (string, error) {
	u, err := s.store.DownloadURL(ctx, m.StorageKey, storage.Download{
		ContentType: m.ContentType,
		FileName:    m.FileName,
		Attachment:  m.Kind == int16(parleyv1.MediaKind_MEDIA_KIND_FILE),
		Expires:     expires,
	})
	if err != nil {
		return "", err
	}
	return s.absolute(ctx, u), nil
}

// ceilSecond rounds t up to a whole second, as URLs carry their expiry: a
// URL never works for less than its lifetime.
func ceilSecond(t time.Time) time.Time {
	if f := t.Truncate(time.Second); f.Before(t) {
		return f.Add(time.Second)
	}
	return t
}

type originKey struct{}

// withOrigin remembers the address a request came to, from which the local
// store's relative URLs are made absolute when no public URL is set.
func withOrigin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		origin := &url.URL{Scheme: scheme, Host: r.Host}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
	})
}

// absolute resolves a store's URL against the public URL or the request's
// origin; an absolute URL (S3's) stays as it is.
func (s *mediaService) absolute(ctx context.Context, ref string) string {
	u, err := url.Parse(ref)
	if err != nil || u.IsAbs() {
		return ref
	}
	base, _ := ctx.Value(originKey{}).(*url.URL)
	if s.cfg.PublicURL != "" {
		if p, err := url.Parse(s.cfg.PublicURL); err == nil {
			base = p
		}
	}
	if base == nil {
		return ref
	}
	return base.ResolveReference(u).String()
}

// checkAvatar checks that id names a completed image userID uploaded, as a
// profile picture or group avatar must be.
func checkAvatar(ctx context.Context, q *db.Queries, userID, id string) error {
	m, err := q.GetMedia(ctx, id)
	if db.IsNoRows(err) || err == nil && m.UploaderID != userID {
		return errAvatarNotFound
	}
	if err != nil {
		return fmt.Errorf("get avatar media: %w", err)
	}
	if m.State != mediaReady || m.Kind != int16(parleyv1.MediaKind_MEDIA_KIND_IMAGE) {
		return errAvatarUnfit
	}
	return nil
}
