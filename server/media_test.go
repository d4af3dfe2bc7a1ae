package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
	"github.com/parley-chat/parley/storage"
)

// mediaEnv is a server on one storage backend.
type mediaEnv struct {
	*env
	backend string
	s3      storage.S3Config // the bucket, on the S3 backend
	dir     string           // the directory, on the local backend
}

// forEachBackend runs fn as subtests on the local store and on S3 (a private
// versitygw), each server configured by edit.
func forEachBackend(t *testing.T, fn func(t *testing.T, me mediaEnv), edit ...func(*server.Config)) {
	t.Helper()
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		e := newEnv(t, append([]func(*server.Config){func(c *server.Config) { c.Media.Dir = dir }}, edit...)...)
		fn(t, mediaEnv{env: e, backend: "local", dir: dir})
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		s3 := s3Config(t)
		e := newEnv(t, append([]func(*server.Config){func(c *server.Config) { c.Media.S3 = s3 }}, edit...)...)
		fn(t, mediaEnv{env: e, backend: "s3", s3: s3})
	})
}

func (e *env) media(opts ...connect.ClientOption) parleyv1connect.MediaServiceClient {
	return parleyv1connect.NewMediaServiceClient(e.client, e.srv.URL, opts...)
}

// put sends body to an upload URL as CreateUpload said to, and returns the
// HTTP status.
func (e *env) put(up *parleyv1.CreateUploadResponse, body []byte) int {
	e.t.Helper()
	req, err := http.NewRequest(up.GetUploadMethod(), up.GetUploadUrl(), bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range up.GetHeaders() {
		req.Header.Set(k, v)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("upload: %v", err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

// upload declares, uploads and completes a media of a.
func (e *env) upload(a account, req *parleyv1.CreateUploadRequest, body []byte) *parleyv1.Media {
	e.t.Helper()
	up := e.startUpload(a, req, body)
	res, err := e.media().CompleteUpload(a.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
	if err != nil {
		e.t.Fatalf("CompleteUpload: %v", err)
	}
	return res.GetMedia()
}

// startUpload declares and uploads a media of a without completing it.
func (e *env) startUpload(a account, req *parleyv1.CreateUploadRequest, body []byte) *parleyv1.CreateUploadResponse {
	e.t.Helper()
	if req.SizeBytes == 0 {
		req.SizeBytes = int64(len(body))
	}
	up, err := e.media().CreateUpload(a.ctx(), req)
	if err != nil {
		e.t.Fatalf("CreateUpload: %v", err)
	}
	if code := e.put(up, body); code != http.StatusOK {
		e.t.Fatalf("upload: HTTP %d", code)
	}
	return up
}

// fetch GETs a URL with optional headers (key, value, …) and returns the
// response with its body read.
func (e *env) fetch(url string, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("GET: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return res, b
}

// testImage is a w×h picture with a gradient and noise, so that it
// compresses like a photo and not to nothing.
func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), uint8(r.IntN(256)), 255})
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeGIF(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := gif.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// tinyWebP is a 1×1 lossless WebP picture.
func tinyWebP(t testing.TB) []byte {
	b, err := base64.StdEncoding.DecodeString("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// oggVoice is the start of an Ogg Opus stream (a first page header and the
// OpusHead packet) followed by filler: what a voice note's first bytes are.
func oggVoice(n int) []byte {
	b := []byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x13OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00")
	return pad(b, n)
}

// mp4Video is an ISO media file's ftyp box followed by an mdat box of filler.
func mp4Video(n int) []byte {
	b := []byte("\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
	b = append(b, 0, 0, 0, 8, 'm', 'd', 'a', 't')
	return pad(b, n)
}

func pad(b []byte, n int) []byte {
	r := rand.New(rand.NewPCG(1, uint64(n)))
	for len(b) < n {
		b = append(b, byte(r.IntN(256)))
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func imageSend(to, mediaID string) *parleyv1.SendRequest {
	return &parleyv1.SendRequest{
		ClientMsgId: fmt.Sprint(rand.Int64()),
		Target:      &parleyv1.SendRequest_UserId{UserId: to},
		Content:     &parleyv1.SendRequest_Image{Image: &parleyv1.ImageContent{MediaId: mediaID}},
	}
}

func TestMediaEachKindThroughSendAndDownload(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice, bob, _ := e.pair("alice", "bob")
		photo := encodePNG(t, testImage(800, 600))
		voice := oggVoice(3000)
		video := mp4Video(5000)
		doc := append([]byte("%PDF-1.4\n"), pad(nil, 2000)...)

		cases := []struct {
			name  string
			req   *parleyv1.CreateUploadRequest
			body  []byte
			send  func(id string) *parleyv1.SendRequest
			check func(t *testing.T, m *parleyv1.Message)
		}{{
			name: "an image carries its measured size and a thumbnail",
			req:  &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png", Sha256: sha(photo)},
			body: photo,
			send: func(id string) *parleyv1.SendRequest {
				return &parleyv1.SendRequest{Content: &parleyv1.SendRequest_Image{Image: &parleyv1.ImageContent{MediaId: id}}}
			},
			check: func(t *testing.T, m *parleyv1.Message) {
				img := m.GetImage()
				if img.GetWidth() != 800 || img.GetHeight() != 600 || img.GetContentType() != "image/png" ||
					img.GetSizeBytes() != int64(len(photo)) || img.GetThumbnailMediaId() == "" {
					t.Errorf("got image content %v, want 800×600 image/png of %d bytes with a thumbnail", img, len(photo))
				}
			},
		}, {
			name: "a voice note carries its duration",
			req: &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VOICE, ContentType: "audio/ogg; codecs=opus",
				Duration: durationpb.New(7 * time.Second)},
			body: voice,
			send: func(id string) *parleyv1.SendRequest {
				return &parleyv1.SendRequest{Content: &parleyv1.SendRequest_Voice{Voice: &parleyv1.VoiceContent{MediaId: id}}}
			},
			check: func(t *testing.T, m *parleyv1.Message) {
				v := m.GetVoice()
				if v.GetDuration().AsDuration() != 7*time.Second || v.GetSizeBytes() != int64(len(voice)) || v.GetContentType() != "audio/ogg; codecs=opus" {
					t.Errorf("got voice content %v, want 7s audio/ogg of %d bytes", v, len(voice))
				}
			},
		}, {
			name: "a video carries its declared dimensions and duration",
			req: &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VIDEO, ContentType: "video/mp4",
				Duration: durationpb.New(90 * time.Second), Width: 1280, Height: 720},
			body: video,
			send: func(id string) *parleyv1.SendRequest {
				return &parleyv1.SendRequest{Content: &parleyv1.SendRequest_Video{Video: &parleyv1.VideoContent{MediaId: id}}}
			},
			check: func(t *testing.T, m *parleyv1.Message) {
				v := m.GetVideo()
				if v.GetWidth() != 1280 || v.GetHeight() != 720 || v.GetDuration().AsDuration() != 90*time.Second || v.GetSizeBytes() != int64(len(video)) {
					t.Errorf("got video content %v, want 1280×720, 90s, %d bytes", v, len(video))
				}
			},
		}, {
			name: "a file carries its name",
			req:  &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/pdf", FileName: "Q3 report \"final\".pdf"},
			body: doc,
			send: func(id string) *parleyv1.SendRequest {
				return &parleyv1.SendRequest{Content: &parleyv1.SendRequest_File{File: &parleyv1.FileContent{MediaId: id}}}
			},
			check: func(t *testing.T, m *parleyv1.Message) {
				f := m.GetFile()
				if f.GetFileName() != "Q3 report \"final\".pdf" || f.GetContentType() != "application/pdf" || f.GetSizeBytes() != int64(len(doc)) {
					t.Errorf("got file content %v", f)
				}
			},
		}}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := e.in(t)
				m := e.upload(alice, tc.req, tc.body)
				if m.GetState() != parleyv1.MediaState_MEDIA_STATE_READY {
					t.Fatalf("got state %v, want READY", m.GetState())
				}
				req := tc.send(m.GetId())
				req.ClientMsgId = fmt.Sprint(rand.Int64())
				req.Target = &parleyv1.SendRequest_UserId{UserId: bob.user.GetId()}
				sent, err := e.msgs().Send(alice.ctx(), req)
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				// Bob reads the message from his history, then downloads.
				page, err := e.msgs().ListMessages(bob.ctx(), &parleyv1.ListMessagesRequest{ConversationId: sent.GetConversationId()})
				if err != nil {
					t.Fatal(err)
				}
				got := page.GetMessages()[len(page.GetMessages())-1]
				if got.GetSeq() != sent.GetSeq() {
					t.Fatalf("got last seq %d, want %d", got.GetSeq(), sent.GetSeq())
				}
				tc.check(t, got)
				res, err := e.media().GetMedia(bob.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
				if err != nil {
					t.Fatalf("bob's GetMedia: %v", err)
				}
				hres, body := e.fetch(res.GetDownloadUrl())
				if hres.StatusCode != http.StatusOK || !bytes.Equal(body, tc.body) {
					t.Fatalf("download: HTTP %d, %d bytes; want 200 and the %d bytes uploaded", hres.StatusCode, len(body), len(tc.body))
				}
				if got, want := hres.Header.Get("Content-Type"), tc.req.GetContentType(); got != want {
					t.Errorf("got Content-Type %q, want %q", got, want)
				}
				disp := hres.Header.Get("Content-Disposition")
				if tc.req.GetKind() == parleyv1.MediaKind_MEDIA_KIND_FILE {
					if disp != `attachment; filename="Q3 report final.pdf"` {
						t.Errorf("got Content-Disposition %q, want the file's name without its quotes, as an attachment", disp)
					}
				} else if !strings.HasPrefix(disp, "inline") {
					t.Errorf("got Content-Disposition %q, want inline", disp)
				}
				if me.backend == "local" && hres.Header.Get("X-Content-Type-Options") != "nosniff" {
					t.Errorf("got X-Content-Type-Options %q, want nosniff", hres.Header.Get("X-Content-Type-Options"))
				}
				if tc.req.GetKind() != parleyv1.MediaKind_MEDIA_KIND_IMAGE {
					if res.GetThumbnailUrl() != "" {
						t.Errorf("got a thumbnail URL for a %v without a thumbnail", tc.req.GetKind())
					}
					return
				}
				tres, tbody := e.fetch(res.GetThumbnailUrl())
				if tres.StatusCode != http.StatusOK {
					t.Fatalf("thumbnail download: HTTP %d", tres.StatusCode)
				}
				thumb, _, err := image.Decode(bytes.NewReader(tbody))
				if err != nil {
					t.Fatalf("decode thumbnail: %v", err)
				}
				if b := thumb.Bounds(); b.Dx() != 320 || b.Dy() != 240 {
					t.Errorf("got a %d×%d thumbnail, want 320×240", b.Dx(), b.Dy())
				}
				// The thumbnail is media of its own, which bob may fetch too.
				if _, err := e.media().GetMedia(bob.ctx(), &parleyv1.GetMediaRequest{MediaId: got.GetImage().GetThumbnailMediaId()}); err != nil {
					t.Errorf("bob's GetMedia of the thumbnail: %v", err)
				}
			})
		}
	})
}

func TestMediaThumbnailsKeepTheAspectOfEveryFormat(t *testing.T) {
	e := newEnv(t)
	alice := e.signUp("alice")
	cases := []struct {
		name           string
		contentType    string
		body           []byte
		wantW, wantH   int32
		thumbW, thumbH int
	}{
		{"a tall JPEG", "image/jpeg", encodeJPEG(t, testImage(300, 900)), 300, 900, 107, 320},
		{"a wide GIF", "image/gif", encodeGIF(t, testImage(640, 100)), 640, 100, 320, 50},
		{"a small PNG is not enlarged", "image/png", encodePNG(t, testImage(40, 30)), 40, 30, 40, 30},
		{"a WebP", "image/webp", tinyWebP(t), 1, 1, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.in(t)
			m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: tc.contentType}, tc.body)
			if m.GetWidth() != tc.wantW || m.GetHeight() != tc.wantH {
				t.Errorf("got %d×%d, want %d×%d", m.GetWidth(), m.GetHeight(), tc.wantW, tc.wantH)
			}
			res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			_, body := e.fetch(res.GetThumbnailUrl())
			cfg, _, err := image.DecodeConfig(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("decode thumbnail: %v", err)
			}
			if cfg.Width != tc.thumbW || cfg.Height != tc.thumbH {
				t.Errorf("got a %d×%d thumbnail, want %d×%d", cfg.Width, cfg.Height, tc.thumbW, tc.thumbH)
			}
		})
	}
}

func TestMediaUploadsWhoseBytesLieAreRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice := e.signUp("alice")
		photo := encodePNG(t, testImage(64, 64))
		html := []byte("<!DOCTYPE html><html><script>alert(document.cookie)</script></html>")
		cases := []struct {
			name string
			req  *parleyv1.CreateUploadRequest
			body []byte
		}{
			{"HTML declared as PNG", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, html},
			{"a JPEG declared as PNG", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, encodeJPEG(t, testImage(8, 8))},
			{"HTML declared as a PDF file", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/pdf"}, html},
			{"HTML declared as a plain file", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/octet-stream"}, html},
			{"a PNG declared as a voice note", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VOICE, ContentType: "audio/ogg"}, photo},
			{"a wrong checksum", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png", Sha256: sha([]byte("other"))}, photo},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := e.in(t)
				up := e.startUpload(alice, tc.req, tc.body)
				_, err := e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
				wantCode(t, err, connect.CodeFailedPrecondition)
				// Nothing usable is left: the media stays pending and cannot be sent.
				res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: up.GetMediaId()})
				wantCode(t, err, connect.CodeFailedPrecondition)
				if res != nil {
					t.Errorf("got %v for refused media", res)
				}
			})
		}
		t.Run("a text file is a file", func(t *testing.T) {
			e := e.in(t)
			m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, []byte("just notes\n"))
			if m.GetState() != parleyv1.MediaState_MEDIA_STATE_READY {
				t.Errorf("got state %v, want READY", m.GetState())
			}
		})
	})
}

// countingReader yields n filler bytes and counts what was read. The HTTP
// transport reads it from its own goroutine.
type countingReader struct {
	n    int64
	read atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	done := r.read.Load()
	if done >= r.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), r.n-done)
	r.read.Add(k)
	return int(k), nil
}

func TestMediaOversizeIsRefusedBeforeTheBodyIsRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice := e.signUp("alice")
		_, err := e.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{
			Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png", SizeBytes: 20<<20 + 1,
		})
		wantCode(t, err, connect.CodeInvalidArgument)

		up, err := e.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{
			Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/octet-stream", SizeBytes: 1000,
		})
		if err != nil {
			t.Fatal(err)
		}
		// 64 MiB against a declared 1000 bytes: refused on Content-Length.
		body := &countingReader{n: 64 << 20}
		req, err := http.NewRequest(up.GetUploadMethod(), up.GetUploadUrl(), body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = body.n
		for k, v := range up.GetHeaders() {
			req.Header.Set(k, v)
		}
		res, err := e.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode < 400 {
				t.Fatalf("oversize upload: HTTP %d, want a refusal", res.StatusCode)
			}
			if me.backend == "local" && res.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("got HTTP %d, want 413", res.StatusCode)
			}
		}
		if sent := body.read.Load(); sent > 16<<20 {
			t.Errorf("the client sent %d bytes before the refusal, want far fewer than the %d", sent, body.n)
		}
		_, err = e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
		wantCode(t, err, connect.CodeFailedPrecondition)

		// Over HTTP/1.1 with Expect: 100-continue, not one byte of the body
		// leaves the client. (versitygw answers 100 Continue before it
		// checks the signature, so this holds for the local store only.)
		if me.backend == "local" {
			tr := e.client.Transport.(*http.Transport).Clone()
			tr.ForceAttemptHTTP2, tr.TLSNextProto = false, map[string]func(string, *tls.Conn) http.RoundTripper{}
			tr.ExpectContinueTimeout = 10 * time.Second
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			body = &countingReader{n: 64 << 20}
			req, err = http.NewRequest(up.GetUploadMethod(), up.GetUploadUrl(), body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = body.n
			req.Header.Set("Expect", "100-continue")
			for k, v := range up.GetHeaders() {
				req.Header.Set(k, v)
			}
			res, err = (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatalf("HTTP/1.1 upload: %v", err)
			}
			res.Body.Close()
			tr.CloseIdleConnections()
			if res.StatusCode < 400 || body.read.Load() != 0 {
				t.Errorf("HTTP/1.1 oversize upload: HTTP %d after %d bytes of body, want a refusal before any", res.StatusCode, body.read.Load())
			}
		}

		// Short of the declared size is refused too.
		if code := e.put(up, make([]byte, 999)); code < 400 {
			t.Errorf("short upload: HTTP %d, want a refusal", code)
		}
	})
}

func TestMediaLocalUploadRefusesChunkedBodiesOverTheSize(t *testing.T) {
	e := newEnv(t)
	alice := e.signUp("alice")
	up, err := e.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{
		Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/octet-stream", SizeBytes: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	// No Content-Length: the server counts as it reads and stops at the limit.
	body := &countingReader{n: 8 << 20}
	req, _ := http.NewRequest(http.MethodPut, up.GetUploadUrl(), io.NopCloser(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("got HTTP %d, want 413", res.StatusCode)
	}
	_, err = e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
}

func TestMediaIsVisibleOnlyToWhoMaySeeIt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice, bob, conv := e.pair("alice", "bob")
		carol := e.signUp("carol")
		photo := encodePNG(t, testImage(50, 50))
		m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, photo)
		get := func(a account) error {
			_, err := e.media().GetMedia(a.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
			return err
		}
		if err := get(alice); err != nil {
			t.Fatalf("the uploader's GetMedia: %v", err)
		}
		wantCode(t, get(bob), connect.CodeNotFound) // not sent yet
		sent, err := e.msgs().Send(alice.ctx(), imageSend(bob.user.GetId(), m.GetId()))
		if err != nil {
			t.Fatal(err)
		}
		if err := get(bob); err != nil {
			t.Fatalf("the recipient's GetMedia: %v", err)
		}
		wantCode(t, get(carol), connect.CodeNotFound)
		_, err = e.media().GetMedia(carol.ctx(), &parleyv1.GetMediaRequest{MediaId: sent.GetMessage().GetImage().GetThumbnailMediaId()})
		wantCode(t, err, connect.CodeNotFound)

		// Bob may not pass alice's media off as his own.
		_, err = e.msgs().Send(bob.ctx(), imageSend(alice.user.GetId(), m.GetId()))
		wantCode(t, err, connect.CodePermissionDenied)
		_, err = e.msgs().Send(carol.ctx(), imageSend(alice.user.GetId(), m.GetId()))
		wantCode(t, err, connect.CodeNotFound)

		// A recall ends bob's access; alice keeps hers.
		if _, err := e.msgs().Recall(alice.ctx(), &parleyv1.RecallRequest{ConversationId: conv, Seq: sent.GetSeq()}); err != nil {
			t.Fatalf("Recall: %v", err)
		}
		wantCode(t, get(bob), connect.CodeNotFound)
		if err := get(alice); err != nil {
			t.Errorf("the uploader's GetMedia after the recall: %v", err)
		}
	})
}

func TestMediaSendChecksTheMedia(t *testing.T) {
	e := newEnv(t)
	alice, bob, _ := e.pair("alice", "bob")
	voice := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VOICE, ContentType: "audio/ogg"}, oggVoice(100))
	pending := e.startUpload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, encodePNG(t, testImage(4, 4)))
	before := e.count(chatMessages)

	_, err := e.msgs().Send(alice.ctx(), imageSend(bob.user.GetId(), voice.GetId()))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = e.msgs().Send(alice.ctx(), imageSend(bob.user.GetId(), pending.GetMediaId()))
	wantCode(t, err, connect.CodeFailedPrecondition)
	_, err = e.msgs().Send(alice.ctx(), imageSend(bob.user.GetId(), "00000000-0000-4000-8000-000000000000"))
	wantCode(t, err, connect.CodeNotFound)
	if got := e.count(chatMessages); got != before {
		t.Errorf("got %d messages after refused sends, want %d", got, before)
	}
}

func TestMediaCreateUploadChecksTheDeclaration(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Media.UploadsPerUser = server.Rate{Burst: 3, Per: time.Hour} })
	alice := e.signUp("alice")
	cases := []struct {
		name string
		req  *parleyv1.CreateUploadRequest
	}{
		{"a voice note over 5 minutes", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VOICE, ContentType: "audio/ogg", SizeBytes: 10, Duration: durationpb.New(301 * time.Second)}},
		{"a voice note over 10 MiB", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VOICE, ContentType: "audio/ogg", SizeBytes: 10<<20 + 1}},
		{"a video over 200 MiB", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VIDEO, ContentType: "video/mp4", SizeBytes: 200<<20 + 1}},
		{"an image of a type not on the list", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/svg+xml", SizeBytes: 10}},
		{"an image declared as text", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "text/html", SizeBytes: 10}},
		{"a duration on an image", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png", SizeBytes: 10, Duration: durationpb.New(time.Second)}},
		{"a thumbnail on a file", &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain", SizeBytes: 10, ThumbnailMediaId: "00000000-0000-4000-8000-000000000000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.media().CreateUpload(alice.ctx(), tc.req)
			wantCode(t, err, connect.CodeInvalidArgument)
		})
	}
	if got := e.count("media"); got != 0 {
		t.Errorf("got %d media rows after refused uploads, want 0", got)
	}
	_, err := e.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{
		Kind: parleyv1.MediaKind_MEDIA_KIND_VIDEO, ContentType: "video/mp4", SizeBytes: 10, ThumbnailMediaId: "00000000-0000-4000-8000-000000000000",
	})
	wantCode(t, err, connect.CodeNotFound)

	// The upload limit: three, then a wait.
	for i := range 4 {
		_, err := e.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain", SizeBytes: 10})
		if i < 3 {
			if err != nil {
				t.Fatalf("upload %d: %v", i, err)
			}
			continue
		}
		wantCode(t, err, connect.CodeResourceExhausted)
		var cerr *connect.Error
		if !errors.As(err, &cerr) || len(cerr.Details()) == 0 {
			t.Fatalf("got %v, want RetryInfo", err)
		}
		v, err := cerr.Details()[0].Value()
		if ri, ok := v.(*errdetails.RetryInfo); err != nil || !ok || ri.GetRetryDelay().AsDuration() <= 0 {
			t.Errorf("got detail %v (%v), want RetryInfo with a delay", v, err)
		}
	}
}

func TestMediaClientThumbnailForAVideo(t *testing.T) {
	e := newEnv(t)
	alice, bob, _ := e.pair("alice", "bob")
	poster := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/jpeg"}, encodeJPEG(t, testImage(160, 90)))
	video := e.upload(alice, &parleyv1.CreateUploadRequest{
		Kind: parleyv1.MediaKind_MEDIA_KIND_VIDEO, ContentType: "video/mp4", ThumbnailMediaId: poster.GetId(), Width: 1920, Height: 1080,
	}, mp4Video(4000))
	if video.GetThumbnailMediaId() != poster.GetId() {
		t.Fatalf("got thumbnail %q, want the poster %q", video.GetThumbnailMediaId(), poster.GetId())
	}
	sent, err := e.msgs().Send(alice.ctx(), &parleyv1.SendRequest{
		ClientMsgId: "v", Target: &parleyv1.SendRequest_UserId{UserId: bob.user.GetId()},
		Content: &parleyv1.SendRequest_Video{Video: &parleyv1.VideoContent{MediaId: video.GetId()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := sent.GetMessage().GetVideo().GetThumbnailMediaId(); got != poster.GetId() {
		t.Errorf("got message thumbnail %q, want %q", got, poster.GetId())
	}
	res, err := e.media().GetMedia(bob.ctx(), &parleyv1.GetMediaRequest{MediaId: video.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if hres, body := e.fetch(res.GetThumbnailUrl()); hres.StatusCode != http.StatusOK || len(body) != int(poster.GetSizeBytes()) {
		t.Errorf("poster download: HTTP %d, %d bytes; want 200, %d", hres.StatusCode, len(body), poster.GetSizeBytes())
	}
	if _, err := e.media().GetMedia(bob.ctx(), &parleyv1.GetMediaRequest{MediaId: poster.GetId()}); err != nil {
		t.Errorf("bob's GetMedia of the poster: %v", err)
	}
}

func TestMediaURLsExpire(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice := e.signUp("alice")
		m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, []byte("soon gone\n"))
		res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if hres, _ := e.fetch(res.GetDownloadUrl()); hres.StatusCode != http.StatusOK {
			t.Fatalf("fresh URL: HTTP %d", hres.StatusCode)
		}
		time.Sleep(time.Until(res.GetExpireTime().AsTime()) + 1100*time.Millisecond)
		if hres, _ := e.fetch(res.GetDownloadUrl()); hres.StatusCode != http.StatusForbidden {
			t.Errorf("expired URL: HTTP %d, want 403", hres.StatusCode)
		}
		// A tampered URL is refused as well.
		if me.backend == "local" {
			fresh, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
			if err != nil {
				t.Fatal(err)
			}
			tampered := strings.Replace(fresh.GetDownloadUrl(), "type=text%2Fplain", "type=text%2Fhtml", 1)
			if tampered == fresh.GetDownloadUrl() {
				t.Fatalf("URL %q has no type to tamper with", fresh.GetDownloadUrl())
			}
			if hres, _ := e.fetch(tampered); hres.StatusCode != http.StatusForbidden {
				t.Errorf("tampered URL: HTTP %d, want 403", hres.StatusCode)
			}
		}
	}, func(c *server.Config) { c.Media.URLTTL = time.Second })
}

func TestMediaDownloadsServeRanges(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice := e.signUp("alice")
		video := mp4Video(100_000)
		m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_VIDEO, ContentType: "video/mp4"}, video)
		res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		hres, body := e.fetch(res.GetDownloadUrl(), "Range", "bytes=50000-50999")
		if hres.StatusCode != http.StatusPartialContent || !bytes.Equal(body, video[50000:51000]) {
			t.Errorf("range: HTTP %d, %d bytes; want 206 and bytes 50000-50999", hres.StatusCode, len(body))
		}
		if got := hres.Header.Get("Content-Range"); got != "bytes 50000-50999/100000" {
			t.Errorf("got Content-Range %q", got)
		}
	})
}

func TestMediaAbandonedUploadsAreSwept(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice := e.signUp("alice")
		keptUp := e.startUpload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, []byte("kept\n"))
		done, err := e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: keptUp.GetMediaId()})
		if err != nil {
			t.Fatal(err)
		}
		kept := done.GetMedia()
		// The local store's upload URL refuses bytes once completion has
		// begun; S3's cannot, but what it takes changes nothing and is
		// swept too.
		want := http.StatusOK
		if me.backend == "local" {
			want = http.StatusConflict
		}
		if code := e.put(keptUp, []byte("late\n")); code != want {
			t.Fatalf("late upload: HTTP %d, want %d", code, want)
		}
		var keptKey string
		if err := e.db.Pool().QueryRow(context.Background(), "SELECT upload_key FROM media WHERE id = $1", kept.GetId()).Scan(&keptKey); err != nil {
			t.Fatal(err)
		}
		abandoned := e.startUpload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, []byte("abandoned\n"))
		var key string
		if err := e.db.Pool().QueryRow(context.Background(), "SELECT upload_key FROM media WHERE id = $1", abandoned.GetMediaId()).Scan(&key); err != nil {
			t.Fatal(err)
		}
		store := me.store(t)
		if _, err := store.Size(context.Background(), key); err != nil {
			t.Fatalf("the upload before the sweep: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for e.count("media WHERE id = '"+abandoned.GetMediaId()+"'") > 0 {
			if time.Now().After(deadline) {
				t.Fatal("the abandoned upload was not swept")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := store.Size(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("the swept upload's object: got %v, want ErrNotFound", err)
		}
		for e.count("media WHERE upload_key IS NOT NULL") > 0 {
			if time.Now().After(deadline) {
				t.Fatal("the completed media's upload key was not swept")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := store.Size(context.Background(), keptKey); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("the late upload's object: got %v, want ErrNotFound", err)
		}
		res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: kept.GetId()})
		if err != nil {
			t.Fatalf("completed media after the sweep: %v", err)
		}
		if _, body := e.fetch(res.GetDownloadUrl()); string(body) != "kept\n" {
			t.Errorf("got %q, want the bytes checked at completion", body)
		}
		_, err = e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: abandoned.GetMediaId()})
		wantCode(t, err, connect.CodeNotFound)
	}, func(c *server.Config) {
		c.Media.UploadTTL = 2 * time.Second
		c.Media.SweepInterval = 100 * time.Millisecond
	})
}

// store opens the test's storage as the server sees it, to look at objects.
func (me mediaEnv) store(t testing.TB) storage.Store {
	t.Helper()
	if me.backend == "s3" {
		s, err := storage.NewS3(context.Background(), me.s3)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s, err := storage.NewLocal(me.dir, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMediaAvatars(t *testing.T) {
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		ge := groupEnvOn(me.env)
		alice, bob := ge.signUp("alice"), ge.signUp("bob")
		stranger := ge.env.signUp("stranger")
		e := ge.env
		pic := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, encodePNG(t, testImage(100, 100)))

		// A profile picture is for every signed-in user to see.
		res, err := e.auth().UpdateProfile(alice.ctx(), &parleyv1.UpdateProfileRequest{AvatarMediaId: &pic.Id})
		if err != nil {
			t.Fatalf("UpdateProfile: %v", err)
		}
		if res.GetUser().GetAvatarMediaId() != pic.GetId() {
			t.Fatalf("got avatar %q, want %q", res.GetUser().GetAvatarMediaId(), pic.GetId())
		}
		got, err := e.media().GetMedia(stranger.ctx(), &parleyv1.GetMediaRequest{MediaId: pic.GetId()})
		if err != nil {
			t.Fatalf("a stranger's GetMedia of a profile picture: %v", err)
		}
		if hres, _ := e.fetch(got.GetDownloadUrl()); hres.StatusCode != http.StatusOK {
			t.Errorf("avatar download: HTTP %d", hres.StatusCode)
		}
		// Someone else's picture, a pending one, a file: refused, nothing changed.
		_, err = e.auth().UpdateProfile(bob.ctx(), &parleyv1.UpdateProfileRequest{AvatarMediaId: &pic.Id})
		wantCode(t, err, connect.CodeNotFound)
		doc := e.upload(bob, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, []byte("x\n"))
		name := "Bob B."
		_, err = e.auth().UpdateProfile(bob.ctx(), &parleyv1.UpdateProfileRequest{DisplayName: &name, AvatarMediaId: &doc.Id})
		wantCode(t, err, connect.CodeFailedPrecondition)
		if me, err := e.auth().GetMe(bob.ctx(), &parleyv1.GetMeRequest{}); err != nil || me.GetUser().GetDisplayName() == name {
			t.Errorf("a refused UpdateProfile changed the profile: %v, %v", me.GetUser(), err)
		}
		// Clearing it.
		empty := ""
		if res, err := e.auth().UpdateProfile(alice.ctx(), &parleyv1.UpdateProfileRequest{AvatarMediaId: &empty}); err != nil || res.GetUser().GetAvatarMediaId() != "" {
			t.Fatalf("clear avatar: %v, %v", res, err)
		}
		_, err = e.media().GetMedia(stranger.ctx(), &parleyv1.GetMediaRequest{MediaId: pic.GetId()})
		wantCode(t, err, connect.CodeNotFound)

		// A group's avatar is for its members.
		g, err := ge.g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: "club", AvatarMediaId: pic.GetId(), MemberIds: []string{bob.user.GetId()}})
		if err != nil {
			t.Fatalf("CreateGroup: %v", err)
		}
		if g.GetGroup().GetAvatarMediaId() != pic.GetId() {
			t.Errorf("got group avatar %q, want %q", g.GetGroup().GetAvatarMediaId(), pic.GetId())
		}
		if _, err := e.media().GetMedia(bob.ctx(), &parleyv1.GetMediaRequest{MediaId: pic.GetId()}); err != nil {
			t.Errorf("a member's GetMedia of the group avatar: %v", err)
		}
		_, err = e.media().GetMedia(stranger.ctx(), &parleyv1.GetMediaRequest{MediaId: pic.GetId()})
		wantCode(t, err, connect.CodeNotFound)

		pic2 := e.upload(bob, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/jpeg"}, encodeJPEG(t, testImage(64, 48)))
		_, err = ge.g.UpdateGroup(alice.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g.GetGroup().GetId(), AvatarMediaId: &pic2.Id})
		wantCode(t, err, connect.CodeNotFound) // bob's picture, not alice's
		if _, err := ge.g.SetMemberRole(alice.ctx(), &parleyv1.SetMemberRoleRequest{
			GroupId: g.GetGroup().GetId(), UserId: bob.user.GetId(), Role: parleyv1.MemberRole_MEMBER_ROLE_ADMIN,
		}); err != nil {
			t.Fatal(err)
		}
		up, err := ge.g.UpdateGroup(bob.ctx(), &parleyv1.UpdateGroupRequest{GroupId: g.GetGroup().GetId(), AvatarMediaId: &pic2.Id})
		if err != nil {
			t.Fatalf("UpdateGroup: %v", err)
		}
		if up.GetGroup().GetAvatarMediaId() != pic2.GetId() {
			t.Errorf("got group avatar %q, want %q", up.GetGroup().GetAvatarMediaId(), pic2.GetId())
		}
		if _, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: pic2.GetId()}); err != nil {
			t.Errorf("the owner's GetMedia of the new avatar: %v", err)
		}
	})
}

func TestMediaCompleteUploadIsOnceAndOnTime(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Media.UploadTTL = time.Second })
	alice, bob := e.signUp("alice"), e.signUp("bob")
	body := []byte("on time\n")
	up := e.startUpload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, body)
	_, err := e.media().CompleteUpload(bob.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
	wantCode(t, err, connect.CodeNotFound) // not bob's upload
	first, err := e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
	if err != nil {
		t.Fatalf("completing a ready media again: %v", err)
	}
	if again.GetMedia().GetId() != first.GetMedia().GetId() || again.GetMedia().GetState() != parleyv1.MediaState_MEDIA_STATE_READY {
		t.Errorf("got %v, want the ready media again", again.GetMedia())
	}

	nothing, err := e.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain", SizeBytes: 4})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: nothing.GetMediaId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if !strings.Contains(err.Error(), "nothing has been uploaded") {
		t.Errorf("got %v, want it to say nothing was uploaded", err)
	}

	late := e.startUpload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain"}, body)
	time.Sleep(time.Until(late.GetExpireTime().AsTime()) + 100*time.Millisecond)
	_, err = e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: late.GetMediaId()})
	wantCode(t, err, connect.CodeFailedPrecondition)
	if !strings.Contains(err.Error(), "expired") {
		t.Errorf("got %v, want it to say the upload expired", err)
	}
	if code := e.put(late, body); code != http.StatusForbidden {
		t.Errorf("upload to an expired URL: HTTP %d, want 403", code)
	}
}

func TestMediaInAGroupFollowsMembership(t *testing.T) {
	ge := groupEnvOn(newEnv(t))
	alice, bob, carol := ge.signUp("alice"), ge.signUp("bob"), ge.signUp("carol")
	e := ge.env
	g, err := ge.g.CreateGroup(alice.ctx(), &parleyv1.CreateGroupRequest{Name: "trip", MemberIds: []string{bob.user.GetId()}})
	if err != nil {
		t.Fatal(err)
	}
	group := g.GetGroup().GetId()
	photo := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/jpeg"}, encodeJPEG(t, testImage(500, 500)))
	if _, err := e.msgs().Send(alice.ctx(), &parleyv1.SendRequest{
		ClientMsgId: "photo", Target: &parleyv1.SendRequest_ConversationId{ConversationId: group},
		Content: &parleyv1.SendRequest_Image{Image: &parleyv1.ImageContent{MediaId: photo.GetId()}},
	}); err != nil {
		t.Fatal(err)
	}
	get := func(a account) error {
		_, err := e.media().GetMedia(a.ctx(), &parleyv1.GetMediaRequest{MediaId: photo.GetId()})
		return err
	}
	if err := get(bob); err != nil {
		t.Fatalf("a member's GetMedia: %v", err)
	}
	// Carol joins after the photo: it is before her history starts.
	if _, err := ge.g.AddMembers(alice.ctx(), &parleyv1.AddMembersRequest{GroupId: group, UserIds: []string{carol.user.GetId()}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, get(carol), connect.CodeNotFound)
	// Bob leaves: the history up to his departure stays his to read.
	if _, err := ge.g.LeaveGroup(bob.ctx(), &parleyv1.LeaveGroupRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	if err := get(bob); err != nil {
		t.Errorf("a former member's GetMedia of what he saw: %v", err)
	}
}

func TestMediaLocalURLsWorkOnEveryNode(t *testing.T) {
	dir := t.TempDir()
	shared := func(c *server.Config) { c.Media.Dir = dir }
	a := newEnv(t, shared)
	b := newEnvOn(t, a.db, shared)
	alice := a.signUp("alice")
	body := []byte("shared by nodes\n")
	up, err := a.media().CreateUpload(alice.ctx(), &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain", SizeBytes: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	// Node a signed the upload URL; node b takes the bytes and completes.
	up.UploadUrl = strings.Replace(up.GetUploadUrl(), a.srv.URL, b.srv.URL, 1)
	if code := b.put(up, body); code != http.StatusOK {
		t.Fatalf("upload on the other node: HTTP %d", code)
	}
	if _, err := b.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()}); err != nil {
		t.Fatal(err)
	}
	res, err := b.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: up.GetMediaId()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.GetDownloadUrl(), b.srv.URL+"/media/v1/") {
		t.Errorf("got download URL %q, want one on the node asked", res.GetDownloadUrl())
	}
	if hres, got := a.fetch(strings.Replace(res.GetDownloadUrl(), b.srv.URL, a.srv.URL, 1)); hres.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Errorf("download on the other node: HTTP %d, %q", hres.StatusCode, got)
	}
}

// withOrientation puts an EXIF segment with orientation o right after a
// JPEG's start marker, as a camera would.
func withOrientation(jpg []byte, o byte) []byte {
	exif := []byte{0xFF, 0xE1, 0, 34}
	exif = append(exif, "Exif\x00\x00MM\x00*\x00\x00\x00\x08"...)
	exif = append(exif, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, o, 0, 0, 0, 0, 0, 0)
	return append(append(append([]byte{}, jpg[:2]...), exif...), jpg[2:]...)
}

func TestMediaThumbnailsOfTurnedPhotosStandUpright(t *testing.T) {
	e := newEnv(t)
	alice := e.signUp("alice")
	// The sensor's picture: red on the left, blue on the right. Turned a
	// quarter clockwise, red is on top.
	img := image.NewRGBA(image.Rect(0, 0, 800, 400))
	for y := range 400 {
		for x := range 800 {
			c := color.RGBA{255, 0, 0, 255}
			if x >= 400 {
				c = color.RGBA{0, 0, 255, 255}
			}
			img.Set(x, y, c)
		}
	}
	m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/jpeg"}, withOrientation(encodeJPEG(t, img), 6))
	if m.GetWidth() != 400 || m.GetHeight() != 800 {
		t.Errorf("got %d×%d, want 400×800 as shown", m.GetWidth(), m.GetHeight())
	}
	res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	_, body := e.fetch(res.GetThumbnailUrl())
	thumb, _, err := image.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if b := thumb.Bounds(); b.Dx() != 160 || b.Dy() != 320 {
		t.Fatalf("got a %d×%d thumbnail, want 160×320", b.Dx(), b.Dy())
	}
	top, bottom := thumb.At(80, 40), thumb.At(80, 280)
	if r, _, b, _ := top.RGBA(); r < 0xC000 || b > 0x4000 {
		t.Errorf("got %v at the top, want red", top)
	}
	if r, _, b, _ := bottom.RGBA(); b < 0xC000 || r > 0x4000 {
		t.Errorf("got %v at the bottom, want blue", bottom)
	}
}

// pauses holds CompleteUpload calls at the server's seam after the check,
// one pause per media id, so a test can act while a completion is under way.
type pauses struct {
	mu sync.Mutex
	at map[string]*pause
}

type pause struct{ arrived, resume chan struct{} }

// add pauses the next completion of mediaID that reaches the seam.
func (p *pauses) add(mediaID string) *pause {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at == nil {
		p.at = map[string]*pause{}
	}
	w := &pause{arrived: make(chan struct{}), resume: make(chan struct{})}
	p.at[mediaID] = w
	return w
}

func (p *pauses) hook(ctx context.Context, mediaID string) {
	p.mu.Lock()
	w := p.at[mediaID]
	delete(p.at, mediaID)
	p.mu.Unlock()
	if w == nil {
		return
	}
	close(w.arrived)
	select {
	case <-w.resume:
	case <-ctx.Done():
	}
}

// TestMediaCompletionIsExclusive races a second upload and CompleteUpload
// against a completion under way: the second call is refused, the local
// upload URL takes no more bytes, and the media serves what the first call
// checked.
func TestMediaCompletionIsExclusive(t *testing.T) {
	var ps pauses
	forEachBackend(t, func(t *testing.T, me mediaEnv) {
		e := me.env
		alice := e.signUp("alice")
		img := encodePNG(t, testImage(200, 150))
		up := e.startUpload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, img)
		p := ps.add(up.GetMediaId())
		type result struct {
			res *parleyv1.CompleteUploadResponse
			err error
		}
		first := make(chan result, 1)
		go func() {
			res, err := e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
			first <- result{res, err}
		}()
		select {
		case <-p.arrived:
		case r := <-first:
			t.Fatalf("the first CompleteUpload returned before its check paused: %v", r.err)
		case <-time.After(10 * time.Second):
			t.Fatal("the first CompleteUpload did not reach its check")
		}
		// Other bytes of the same size to the same URL. S3 cannot revoke a
		// presigned URL, so there it takes them, but they are never read.
		code := e.put(up, pad(nil, len(img)))
		if me.backend == "local" && code != http.StatusConflict {
			t.Errorf("upload during completion: HTTP %d, want %d", code, http.StatusConflict)
		}
		_, err := e.media().CompleteUpload(alice.ctx(), &parleyv1.CompleteUploadRequest{MediaId: up.GetMediaId()})
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "being completed") {
			t.Errorf("second CompleteUpload: got %v, want FailedPrecondition saying the upload is being completed", err)
		}
		close(p.resume)
		r := <-first
		if r.err != nil {
			t.Fatalf("first CompleteUpload: %v", r.err)
		}
		got, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: up.GetMediaId()})
		if err != nil {
			t.Fatalf("GetMedia: %v", err)
		}
		res, body := e.fetch(got.GetDownloadUrl())
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, img) {
			t.Errorf("download: HTTP %d with %d bytes, want 200 with the %d bytes checked", res.StatusCode, len(body), len(img))
		}
	}, func(c *server.Config) { server.SetMediaAfterCheck(c, ps.hook) })
}

// TestMediaImagesOverTheDecodeBudgetGetNoThumbnail completes images whose
// decoding would take more memory than the default decode budget, and an
// animated WebP, which cannot be decoded: they are ready with their size,
// without a thumbnail.
func TestMediaImagesOverTheDecodeBudgetGetNoThumbnail(t *testing.T) {
	e := newEnv(t)
	alice := e.signUp("alice")
	// 7,000×7,000 paletted pixels: 49 MB decoded and a 72 MB scaling
	// buffer, from a file of some 50 KB.
	bomb := encodePNG(t, image.NewPaletted(image.Rect(0, 0, 7000, 7000), color.Palette{color.Black, color.White}))
	anim, err := os.ReadFile(filepath.Join("testdata", "images", "animated.webp"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, contentType string
		body              []byte
		w, h              int32
	}{
		{"a decompression bomb", "image/png", bomb, 7000, 7000},
		{"an animated WebP", "image/webp", anim, 640, 480},
	}
	for _, tc := range tests {
		m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: tc.contentType}, tc.body)
		if m.GetState() != parleyv1.MediaState_MEDIA_STATE_READY || m.GetWidth() != tc.w || m.GetHeight() != tc.h || m.GetThumbnailMediaId() != "" {
			t.Errorf("%s: got %v %dx%d thumbnail %q, want ready %dx%d without a thumbnail",
				tc.name, m.GetState(), m.GetWidth(), m.GetHeight(), m.GetThumbnailMediaId(), tc.w, tc.h)
		}
	}
	small := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_IMAGE, ContentType: "image/png"}, encodePNG(t, testImage(400, 300)))
	if small.GetThumbnailMediaId() == "" {
		t.Error("an image within the budget got no thumbnail")
	}
}
