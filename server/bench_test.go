package server_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/server"
)

// The auth benchmarks measure one client's end-to-end latency over HTTP/2
// with production password hashing (argon2id at the OWASP minimum), which
// dominates Register and Login by design.
//
//	go test -run '^$' -bench . -benchtime 50x ./server/

func productionHashing(c *server.Config) { c.Password = server.OWASPPasswordParams }

func BenchmarkRegister(b *testing.B) {
	e := newEnv(b, productionHashing)
	forEachProtocolB(b, func(b *testing.B, opts []connect.ClientOption) {
		c := e.auth(opts...)
		ctx := context.Background()
		prefix := "bench_" + strconv.FormatInt(time.Now().UnixNano(), 36)
		for i := 0; b.Loop(); i++ {
			_, err := c.Register(ctx, &parleyv1.RegisterRequest{
				Username: fmt.Sprintf("%s_%d", prefix, i), Password: "benchmark password", DisplayName: "Bench",
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkLogin(b *testing.B) {
	e := newEnv(b, productionHashing)
	e.signUp("bench_login")
	forEachProtocolB(b, func(b *testing.B, opts []connect.ClientOption) {
		c := e.auth(opts...)
		ctx := context.Background()
		for b.Loop() {
			if _, err := c.Login(ctx, &parleyv1.LoginRequest{Username: "bench_login", Password: passwordOf("bench_login")}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetMe is an authenticated RPC without password hashing: the cost
// of the token check, the session cache and one query.
func BenchmarkGetMe(b *testing.B) {
	e := newEnv(b)
	a := e.signUp("bench_getme")
	forEachProtocolB(b, func(b *testing.B, opts []connect.ClientOption) {
		c := e.auth(opts...)
		ctx := a.ctx()
		for b.Loop() {
			if _, err := c.GetMe(ctx, &parleyv1.GetMeRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func forEachProtocolB(b *testing.B, fn func(b *testing.B, opts []connect.ClientOption)) {
	for _, p := range protocols {
		b.Run(p.name, func(b *testing.B) { fn(b, p.opts) })
	}
}

// BenchmarkSend is one client's Send latency in an existing direct
// conversation: one transaction, ack after commit.
func BenchmarkSend(b *testing.B) {
	e := newEnv(b, func(c *server.Config) { c.SendPerUser = server.Rate{} })
	a, _, conv := e.pair("bench_send_a", "bench_send_b")
	forEachProtocolB(b, func(b *testing.B, opts []connect.ClientOption) {
		c := e.msgs(opts...)
		for b.Loop() {
			if _, err := c.Send(a.ctx(), text("", "benchmark", conv)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The media benchmarks measure one client's upload and download throughput,
// 5 MiB at a time, on the local store (over HTTP/2 with TLS on loopback) and
// on S3 (a private versitygw on loopback, plain HTTP/1.1):
//
//	go test -run '^$' -bench 'Media' -benchtime 50x ./server/
func BenchmarkMediaUpload(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, e *env) {
		alice := e.signUp("alice")
		body := pad(nil, 5<<20)
		sum := sha(body)
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			// With a checksum, CompleteUpload reads every byte back.
			e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/octet-stream", Sha256: sum}, body)
		}
	})
}

func BenchmarkMediaDownload(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, e *env) {
		alice := e.signUp("alice")
		body := pad(nil, 5<<20)
		m := e.upload(alice, &parleyv1.CreateUploadRequest{Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "application/octet-stream"}, body)
		res, err := e.media().GetMedia(alice.ctx(), &parleyv1.GetMediaRequest{MediaId: m.GetId()})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if hres, got := e.fetch(res.GetDownloadUrl()); hres.StatusCode != 200 || len(got) != len(body) {
				b.Fatalf("download: HTTP %d, %d bytes", hres.StatusCode, len(got))
			}
		}
	})
}

// forEachBackendB runs fn on a server per media store, without upload limits.
func forEachBackendB(b *testing.B, fn func(b *testing.B, e *env)) {
	unlimited := func(c *server.Config) { c.Media.UploadsPerUser = server.Rate{} }
	b.Run("local", func(b *testing.B) { fn(b, newEnv(b, unlimited)) })
	b.Run("s3", func(b *testing.B) {
		s3 := s3Config(b)
		fn(b, newEnv(b, unlimited, func(c *server.Config) { c.Media.S3 = s3 }))
	})
}
