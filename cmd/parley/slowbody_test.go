package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/parley-chat/parley/db/dbtest"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// bodyLimit is the request body timeout the tests configure: short, so
// that they take little time.
const bodyLimit = 300 * time.Millisecond

// slack is how much later than its deadline a cut may come on a loaded
// machine.
const slack = 3 * time.Second

// slowServers runs `parley serve` twice, plaintext (HTTP/1.1 and h2c on one
// port) and TLS, with the short body limit, and returns the transports to
// reach them.
// slowTestPassword passes the password rules (no common password, no
// username inside).
const slowTestPassword = "quiet-lantern-orbit-7"

func slowServers(t *testing.T) []transport {
	t.Helper()
	vars := map[string]string{
		"PARLEY_DATABASE_URL":         dbtest.URL(t),
		"PARLEY_ARGON2_MEMORY_KIB":    "64",
		"PARLEY_ARGON2_ITERATIONS":    "1",
		"PARLEY_REQUEST_BODY_TIMEOUT": bodyLimit.String(),
		"PARLEY_UPLOAD_MIN_RATE":      "2048",
	}
	plain, _ := startServe(t, nil, vars)
	certFile, keyFile, pool := writeSelfSigned(t)
	vars["PARLEY_TLS_CERT"], vars["PARLEY_TLS_KEY"] = certFile, keyFile
	secure, _ := startServe(t, nil, vars)
	secure = strings.Replace(secure, "http://", "https://", 1)

	h1 := &http.Transport{Protocols: new(http.Protocols)}
	h1.Protocols.SetHTTP1(true)
	tlsH2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	for _, tr := range []*http.Transport{h1, tlsH2} {
		t.Cleanup(tr.CloseIdleConnections)
	}
	h2cClient := h2c()
	t.Cleanup(h2cClient.CloseIdleConnections)
	return []transport{
		{name: "HTTP/1.1", url: plain, client: &http.Client{Transport: h1}},
		{name: "h2c", url: plain, client: h2cClient},
		{name: "TLS", url: secure, client: &http.Client{Transport: tlsH2}, pool: pool},
	}
}

// transport is one way to reach a server: HTTP/1.1, h2c with prior
// knowledge, or HTTP/2 over TLS by ALPN.
type transport struct {
	name   string
	url    string
	client *http.Client
	pool   *x509.CertPool // TLS only
}

func (tr transport) addr() string {
	_, addr, _ := strings.Cut(tr.url, "://")
	return addr
}

// slowRequest sends the headers of a Login that announces a body of size
// bytes, then dribble bytes of it one at a time every interval (none:
// a stall), over a raw connection so that nothing hides the slowness. It
// returns how long after the headers the server ended the request, or an
// error if it did not within the limit and slack.
func (tr transport) slowRequest(size, dribble int, interval time.Duration) (time.Duration, error) {
	if tr.name == "HTTP/1.1" {
		return tr.slowHTTP1(size, dribble, interval)
	}
	return tr.slowHTTP2(size, dribble, interval)
}

func (tr transport) slowHTTP1(size, dribble int, interval time.Duration) (time.Duration, error) {
	conn, err := net.Dial("tcp", tr.addr())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(bodyLimit + time.Duration(dribble)*interval + slack))
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\nContent-Length: %d\r\n\r\n",
		parleyv1connect.AuthServiceLoginProcedure, tr.addr(), size); err != nil {
		return 0, err
	}
	start := time.Now()
	go dribbleBytes(dribble, interval, func(b []byte) error { _, err := conn.Write(b); return err })
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, fmt.Errorf("read response: %w", err)
	}
	elapsed := time.Since(start)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusGatewayTimeout {
		return elapsed, fmt.Errorf("got HTTP %d %s, want 504 (deadline_exceeded)", res.StatusCode, body)
	}
	// The connection is closed, not kept for another request: its state is
	// unknown after an incomplete body. A client still dribbling when the
	// server closed gets a reset rather than an end of file.
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return elapsed, fmt.Errorf("after the response read %d bytes, %v; want the connection closed", n, err)
	}
	return elapsed, nil
}

func (tr transport) slowHTTP2(size, dribble int, interval time.Duration) (time.Duration, error) {
	var conn net.Conn
	var err error
	scheme := "http"
	if tr.pool != nil {
		scheme = "https"
		conn, err = tls.Dial("tcp", tr.addr(), &tls.Config{RootCAs: tr.pool, NextProtos: []string{"h2"}})
		if err == nil && conn.(*tls.Conn).ConnectionState().NegotiatedProtocol != "h2" {
			err = errors.New("ALPN did not choose h2")
		}
	} else {
		conn, err = net.Dial("tcp", tr.addr())
	}
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(bodyLimit + time.Duration(dribble)*interval + slack))
	var mu sync.Mutex // the framer's writes
	fr := http2.NewFramer(conn, conn)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		return 0, err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", scheme}, {":authority", tr.addr()}, {":path", parleyv1connect.AuthServiceLoginProcedure},
		{"content-type", "application/proto"}, {"content-length", strconv.Itoa(size)},
	} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteSettings(); err != nil {
		return 0, err
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return 0, err
	}
	start := time.Now()
	go dribbleBytes(dribble, interval, func(b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		return fr.WriteData(1, false, b)
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, fmt.Errorf("read frame: %w", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				mu.Lock()
				err = fr.WriteSettingsAck()
				mu.Unlock()
			}
		case *http2.RSTStreamFrame:
			return time.Since(start), nil
		case *http2.HeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				return time.Since(start), nil
			}
		case *http2.DataFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				return time.Since(start), nil
			}
		case *http2.GoAwayFrame:
			return 0, fmt.Errorf("GOAWAY %v before the request ended", f.ErrCode)
		}
		if err != nil {
			return 0, err
		}
	}
}

// dribbleBytes writes n bytes one at a time, every interval, until a write
// fails.
func dribbleBytes(n int, interval time.Duration, write func([]byte) error) {
	for range n {
		time.Sleep(interval)
		if err := write([]byte{0}); err != nil {
			return
		}
	}
}

// handlersRunning counts the goroutines serving an HTTP/1.1 connection and
// those running an HTTP/2 request's handler.
func handlersRunning() (http1Conns, http2Handlers int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "net/http.(*conn).serve("):
			if !strings.Contains(g, "serveConn") { // an HTTP/2 connection begins there too
				http1Conns++
			}
		case strings.Contains(g, "http2serverConn).runHandler("):
			http2Handlers++
		}
	}
	return http1Conns, http2Handlers
}

// waitHandlersDone waits until no request handler and no HTTP/1.1
// connection remain beyond the baseline.
func waitHandlersDone(t *testing.T, base1, base2 int) {
	t.Helper()
	deadline := time.Now().Add(slack)
	for {
		h1, h2 := handlersRunning()
		if h1 <= base1 && h2 <= base2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d HTTP/1.1 connections and %d HTTP/2 handlers still running, want at most %d and %d", h1, h2, base1, base2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeCutsOffSlowRequestBodies(t *testing.T) {
	transports := slowServers(t)
	const clients = 10
	for _, tr := range transports {
		for _, c := range []struct {
			name     string
			dribble  int
			interval time.Duration
		}{
			{"a body that never comes", 0, 0},
			// A byte every 50 ms keeps any per-read timeout happy; the
			// limit is on the whole body.
			{"a body dribbling a byte at a time", 100, 50 * time.Millisecond},
		} {
			t.Run(tr.name+"/"+c.name, func(t *testing.T) {
				base1, base2 := handlersRunning()
				var wg sync.WaitGroup
				errs := make([]error, clients)
				took := make([]time.Duration, clients)
				for i := range clients {
					wg.Go(func() { took[i], errs[i] = tr.slowRequest(1000, c.dribble, c.interval) })
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("client %d: %v", i, err)
					}
					if took[i] < bodyLimit || took[i] > bodyLimit+slack {
						t.Errorf("client %d was cut off after %v, want after the limit of %v", i, took[i], bodyLimit)
					}
				}
				waitHandlersDone(t, base1, base2)
			})
		}
	}
}

// signIn registers username on the server at url and returns a context
// carrying its access token, and its id.
func signIn(t *testing.T, tr transport, username string) (context.Context, string) {
	t.Helper()
	auth := parleyv1connect.NewAuthServiceClient(tr.client, tr.url)
	ctx := context.Background()
	if _, err := auth.Register(ctx, &parleyv1.RegisterRequest{Username: username, Password: slowTestPassword, DisplayName: username}); err != nil {
		t.Fatalf("Register(%s): %v", username, err)
	}
	res, err := auth.Login(ctx, &parleyv1.LoginRequest{Username: username, Password: slowTestPassword})
	if err != nil {
		t.Fatalf("Login(%s): %v", username, err)
	}
	cctx, info := connect.NewClientContext(ctx)
	info.RequestHeader().Set("Authorization", "Bearer "+res.GetTokens().GetAccessToken())
	return cctx, res.GetUser().GetId()
}

func TestServeKeepsStreamsAndUploadsPastTheBodyLimit(t *testing.T) {
	transports := slowServers(t)
	for i, tr := range transports {
		t.Run(tr.name+"/a Subscribe stream idle past the limit receives events", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			actx, _ := signIn(t, tr, fmt.Sprintf("sender%d", i))
			bctx, bID := signIn(t, tr, fmt.Sprintf("listener%d", i))
			stream, err := parleyv1connect.NewMessagesServiceClient(tr.client, tr.url).Subscribe(
				context.WithoutCancel(bctx), &parleyv1.SubscribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			go func() { <-ctx.Done(); _ = stream.Close() }()
			for stream.Receive() && stream.Msg().GetHeartbeat() == nil { // the catch-up ends with a heartbeat
			}
			// Idle for several limits: the stream must outlive its request's
			// body deadline.
			time.Sleep(4 * bodyLimit)
			if _, err := parleyv1connect.NewContactsServiceClient(tr.client, tr.url).SendFriendRequest(actx,
				&parleyv1.SendFriendRequestRequest{UserId: bID}); err != nil {
				t.Fatal(err)
			}
			for stream.Receive() {
				if stream.Msg().GetContact().GetFriendRequest() != nil {
					return
				}
			}
			t.Fatalf("the stream ended before the friend request arrived: %v", stream.Err())
		})

		t.Run(tr.name+"/an upload slower than the body limit but steady succeeds", func(t *testing.T) {
			ctx, _ := signIn(t, tr, fmt.Sprintf("uploader%d", i))
			// 16 KiB in 1 KiB pieces every 60 ms: about 1 s, three times the
			// limit, at 17 KiB/s, well above the 2 KiB/s minimum.
			status, err := upload(ctx, tr, 16<<10, 1<<10, 60*time.Millisecond)
			if err != nil || status != http.StatusOK {
				t.Fatalf("upload = HTTP %d, %v; want 200", status, err)
			}
		})

		t.Run(tr.name+"/an upload below the minimum rate is cut off", func(t *testing.T) {
			ctx, _ := signIn(t, tr, fmt.Sprintf("trickler%d", i))
			// 100 bytes/s against a minimum of 2 KiB/s: 1 KiB would take 10 s.
			start := time.Now()
			status, err := upload(ctx, tr, 1<<10, 10, 100*time.Millisecond)
			if err == nil && status == http.StatusOK {
				t.Fatal("upload succeeded, want it cut off")
			}
			if took := time.Since(start); took > bodyLimit+slack {
				t.Errorf("cut off after %v, want soon after %v", took, bodyLimit)
			}
		})
	}
}

// upload creates an upload of size bytes and PUTs its body to the local
// store in pieces of chunk bytes every interval. It returns the status of
// the PUT.
func upload(ctx context.Context, tr transport, size, chunk int, interval time.Duration) (int, error) {
	media := parleyv1connect.NewMediaServiceClient(tr.client, tr.url)
	up, err := media.CreateUpload(ctx, &parleyv1.CreateUploadRequest{
		Kind: parleyv1.MediaKind_MEDIA_KIND_FILE, ContentType: "text/plain", SizeBytes: int64(size), FileName: "slow.txt",
	})
	if err != nil {
		return 0, fmt.Errorf("CreateUpload: %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		piece := bytes.Repeat([]byte("x"), chunk)
		for sent := 0; sent < size; sent += chunk {
			time.Sleep(interval)
			if _, err := pw.Write(piece[:min(chunk, size-sent)]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	defer pr.Close()
	// Bounded, so that an upload the server fails to cut off fails the
	// test soon rather than running to its end.
	rctx, cancel := context.WithTimeout(context.Background(), time.Duration(size/chunk)*interval+2*slack)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, up.GetUploadMethod(), up.GetUploadUrl(), pr)
	if err != nil {
		return 0, err
	}
	req.ContentLength = int64(size)
	for k, v := range up.GetHeaders() {
		req.Header.Set(k, v)
	}
	res, err := tr.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}
