package server_test

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/health/grpc_health_v1"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func TestProbes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("liveness and readiness say ok", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			code, body := e.in(t).get(path)
			if code != http.StatusOK || strings.TrimSpace(body) != "ok" {
				t.Errorf("GET %s = %d %q, want 200 \"ok\"", path, code, body)
			}
		}
	})

	t.Run("without the database only liveness says ok", func(t *testing.T) {
		e := newEnv(t)
		conn := e.grpcConn(t)
		e.db.Close()

		if code, _ := e.in(t).get("/healthz"); code != http.StatusOK {
			t.Errorf("GET /healthz = %d, want 200", code)
		}
		if code, _ := e.in(t).get("/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("GET /readyz = %d, want 503", code)
		}
		res, err := grpc_health_v1.NewHealthClient(conn).Check(context.Background(), &grpc_health_v1.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health Check: %v", err)
		}
		if got := res.GetStatus(); got != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health Check = %v, want NOT_SERVING", got)
		}
	})
}

func TestMetricsCountRPCsByProcedureAndCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.register("metered", "Metered")
	_, err := login(e.auth(), "metered", "wrong password")
	wantCode(t, err, connect.CodeUnauthenticated)

	code, body := e.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, want 200", code)
	}
	for _, want := range []string{
		`parley_rpc_requests_total{code="ok",procedure="` + parleyv1connect.AuthServiceRegisterProcedure + `"} 1`,
		`parley_rpc_requests_total{code="unauthenticated",procedure="` + parleyv1connect.AuthServiceLoginProcedure + `"} 1`,
		`parley_rpc_duration_seconds_count{procedure="` + parleyv1connect.AuthServiceRegisterProcedure + `"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	const allowed = "https://app.example"
	e := newEnv(t, func(c *server.Config) { c.CORSOrigins = []string{allowed} })

	// preflight asks what a browser asks before a cross-origin call with a
	// token; browsers send the header names lower case and sorted (Fetch
	// standard), which rs/cors insists on.
	preflight := func(t *testing.T, e *env, origin string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodOptions, e.srv.URL+parleyv1connect.AuthServiceGetMeProcedure, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		req.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type")
		res, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		return res
	}

	t.Run("a listed origin may call with a token", func(t *testing.T) {
		res := preflight(t, e, allowed)
		if res.StatusCode >= 300 {
			t.Errorf("preflight answered %d, want a 2xx", res.StatusCode)
		}
		h := res.Header
		if got := h.Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("got Access-Control-Allow-Origin %q, want %q", got, allowed)
		}
		if got := strings.ToLower(h.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "authorization") {
			t.Errorf("got Access-Control-Allow-Headers %q, want authorization among them", got)
		}
		if got := h.Get("Access-Control-Allow-Methods"); !strings.Contains(got, http.MethodPost) {
			t.Errorf("got Access-Control-Allow-Methods %q, want POST among them", got)
		}

		// The call itself carries the origin back and exposes Connect's headers.
		ctx, info := connect.NewClientContext(context.Background())
		info.RequestHeader().Set("Origin", allowed)
		_, err := e.auth().Register(ctx, &parleyv1.RegisterRequest{Username: "browser", Password: "long enough", DisplayName: "Browser"})
		if err != nil {
			t.Fatalf("Register from the allowed origin: %v", err)
		}
		if got := info.ResponseHeader().Get("Access-Control-Allow-Origin"); got != allowed {
			t.Errorf("got Access-Control-Allow-Origin %q on the call, want %q", got, allowed)
		}
	})

	t.Run("another origin may not", func(t *testing.T) {
		if got := preflight(t, e, "https://evil.example").Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("got Access-Control-Allow-Origin %q for an unlisted origin, want none", got)
		}
	})

	t.Run("no origin may without a list", func(t *testing.T) {
		if got := preflight(t, newEnv(t), allowed).Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("got Access-Control-Allow-Origin %q with no origins configured, want none", got)
		}
	})
}

func TestGRPCWeb(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	web := connect.WithGRPCWeb()
	c := e.auth(web)

	if _, err := c.Register(context.Background(), &parleyv1.RegisterRequest{Username: "webby", Password: "long enough", DisplayName: "Webby"}); err != nil {
		t.Fatalf("Register over gRPC-Web: %v", err)
	}
	res, err := login(c, "webby", "long enough")
	if err != nil {
		t.Fatalf("Login over gRPC-Web: %v", err)
	}
	me, err := c.GetMe(bearer(res.GetTokens().GetAccessToken()), &parleyv1.GetMeRequest{})
	if err != nil {
		t.Fatalf("GetMe over gRPC-Web: %v", err)
	}
	if got := me.GetUser().GetUsername(); got != "webby" {
		t.Errorf("got username %q, want %q", got, "webby")
	}
	_, err = c.GetMe(context.Background(), &parleyv1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)
	_, err = c.Register(context.Background(), &parleyv1.RegisterRequest{Username: "webby", Password: "long enough", DisplayName: "Again"})
	wantCode(t, err, connect.CodeAlreadyExists)
}

// get fetches path from the server and returns the status and body.
func (e *env) get(path string) (int, string) {
	e.t.Helper()
	res, err := e.client.Get(e.srv.URL + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("GET %s: read body: %v", path, err)
	}
	return res.StatusCode, string(body)
}

// TestConnectGETForReads calls the side-effect-free procedures with HTTP GET,
// as browsers do to let responses be cached.
func TestConnectGETForReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	uma := e.signUp("uma")
	var methods []string // the HTTP methods the client used, to prove it sent GETs
	record := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			res, err := next(ctx, req)
			methods = append(methods, req.HTTPMethod())
			return res, err
		}
	})
	c := e.auth(connect.WithHTTPGet(), connect.WithInterceptors(record))

	me, err := c.GetMe(uma.ctx(), &parleyv1.GetMeRequest{})
	if err != nil {
		t.Fatalf("GetMe over GET: %v", err)
	}
	if got := me.GetUser().GetUsername(); got != "uma" {
		t.Errorf("got username %q, want %q", got, "uma")
	}
	res, err := c.SearchUsers(uma.ctx(), &parleyv1.SearchUsersRequest{Query: "um"})
	if err != nil {
		t.Fatalf("SearchUsers over GET: %v", err)
	}
	if got := usernames(res.GetUsers()); len(got) != 1 || got[0] != "uma" {
		t.Errorf("got %v, want [uma]", got)
	}
	_, err = c.GetMe(context.Background(), &parleyv1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)
	_, err = c.SearchUsers(uma.ctx(), &parleyv1.SearchUsersRequest{Query: "um", PageSize: 51})
	wantCode(t, err, connect.CodeInvalidArgument)
	for _, m := range methods {
		if m != http.MethodGet {
			t.Errorf("the client sent %s, want GET for every call (methods: %v)", m, methods)
		}
	}
}

func TestWebDirServesTheWebClientBesideTheAPI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<!doctype html><title>Parley</title>"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *server.Config) { c.WebDir = dir })

	if code, body := e.get("/"); code != http.StatusOK || !strings.Contains(body, "<title>Parley</title>") {
		t.Errorf("GET / = %d %q, want 200 and index.html", code, body)
	}
	if code, _ := e.get("/missing.js"); code != http.StatusNotFound {
		t.Errorf("GET /missing.js = %d, want 404", code)
	}
	// The API and the probes still answer on their own paths.
	if code, _ := e.get("/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200", code)
	}
	e.register("webuser", "Web User")
	res, err := e.client.Post(e.srv.URL+"/index.html", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /index.html = %d, want 405", res.StatusCode)
	}

	// Without a web directory nothing is served at /.
	if code, _ := newEnv(t).get("/"); code != http.StatusNotFound {
		t.Errorf("GET / without a web directory = %d, want 404", code)
	}
}

// Requests and responses may be gzip-compressed both ways: a client that
// compresses what it sends is understood, and a response over the threshold
// comes back as standard gzip that any client decodes.
func TestGzipBothWays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, _, conv := e.pair("gzip_a", "gzip_b")
	body := strings.Repeat("the quick brown fox jumps over the lazy dog. ", 100)
	c := e.msgs(connect.WithGRPC(), connect.WithSendGzip())
	if _, err := c.Send(a.ctx(), rpcToConv(conv, body)); err != nil {
		t.Fatalf("Send with a gzip-compressed request: %v", err)
	}

	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/parley.v1.MessagesService/ListMessages",
		strings.NewReader(`{"conversationId":"`+conv+`","limit":10}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: the transport leaves the body compressed
	req.Header.Set("Authorization", "Bearer "+a.tokens.GetAccessToken())
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("ListMessages answered %d with Content-Encoding %q; want 200, gzip", res.StatusCode, res.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatalf("the response is not gzip: %v", err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("decompress the response: %v", err)
	}
	if !strings.Contains(string(plain), body) {
		t.Fatalf("the decompressed response lacks the message: %.200s", plain)
	}
}
