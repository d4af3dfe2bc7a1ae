package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/db/dbtest"
	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/server"
)

func TestMain(m *testing.M) {
	code := dbtest.Main(m)
	stopS3()
	os.Exit(code)
}

// testConfig is the production configuration with cheap password hashing and
// limits loose enough for tests that register many users from one address.
func testConfig() server.Config {
	cfg := server.DefaultConfig()
	cfg.Password = server.PasswordParams{MemoryKiB: 64, Iterations: 1, Parallelism: 1}
	cfg.LoginPerSource = server.Rate{Burst: 1000, Per: time.Minute}
	cfg.LoginPerAccount = server.Rate{Burst: 1000, Per: time.Minute}
	cfg.LoginPerAddress = server.Rate{Burst: 10000, Per: time.Minute}
	cfg.RegisterPerAddress = server.Rate{Burst: 10000, Per: time.Minute}
	return cfg
}

// env is a running server on its own fresh database, reached over real HTTP/2.
type env struct {
	t      testing.TB
	db     *db.DB
	srv    *httptest.Server
	client *http.Client
}

// newEnv starts the server on a fresh database. edit, if given, adjusts the
// test configuration first.
func newEnv(t testing.TB, edit ...func(*server.Config)) *env {
	t.Helper()
	d := dbtest.New(t)
	return newEnvOn(t, d, edit...)
}

// newEnvOn starts a server on an existing database, as a second node or a
// restarted one would.
func newEnvOn(t testing.TB, d *db.DB, edit ...func(*server.Config)) *env {
	t.Helper()
	cfg := testConfig()
	cfg.Media.Dir = t.TempDir()
	// The HTTP server starts first, so that the node knows the URL the
	// other nodes reach it at (calls are passed to the node hosting them).
	var handler atomic.Pointer[http.Handler]
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	hs.EnableHTTP2 = true
	hs.StartTLS()
	cfg.NodeURL, cfg.NodeClient = hs.URL, hs.Client()
	for _, e := range edit {
		e(&cfg)
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("PARLEY_TEST_LOG") != "" {
		// Server logs for debugging a failing test: PARLEY_TEST_LOG=1 go test …
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err := server.New(context.Background(), d, cfg, logger)
	if err != nil {
		hs.Close()
		t.Fatalf("server.New: %v", err)
	}
	t.Cleanup(s.Close)
	t.Cleanup(hs.Close) // first: the requests end before the server closes
	h := s.Handler()
	handler.Store(&h)
	return &env{t: t, db: d, srv: hs, client: hs.Client()}
}

// protocols are the wire protocols every handler case runs over: Connect (the
// web client's) and gRPC (the Flutter client's).
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
}

// forEachProtocol runs fn once per protocol, as subtests.
func forEachProtocol(t *testing.T, fn func(t *testing.T, opts []connect.ClientOption)) {
	t.Helper()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) { fn(t, p.opts) })
	}
}

func (e *env) auth(opts ...connect.ClientOption) parleyv1connect.AuthServiceClient {
	return parleyv1connect.NewAuthServiceClient(e.client, e.srv.URL, opts...)
}

// bearer returns a context that sends token as the caller's access token.
func bearer(token string) context.Context {
	ctx, info := connect.NewClientContext(context.Background())
	info.RequestHeader().Set("Authorization", "Bearer "+token)
	return ctx
}

// account is a registered, signed-in user.
type account struct {
	user     *parleyv1.User
	password string
	tokens   *parleyv1.Tokens
	// accountConv is the user's account conversation, which the server
	// writes (settings, contacts, deletions); chatOnly and friends leave it
	// out where a test looks at chat traffic only.
	accountConv string
}

// chatOnly returns convs without a's account conversation.
func (a account) chatOnly(convs []*parleyv1.Conversation) []*parleyv1.Conversation {
	var out []*parleyv1.Conversation
	for _, c := range convs {
		if c.GetId() != a.accountConv {
			out = append(out, c)
		}
	}
	return out
}

// chatSync returns res without what concerns a's account conversation.
func (a account) chatSync(res *parleyv1.SyncResponse) *parleyv1.SyncResponse {
	out := proto.Clone(res).(*parleyv1.SyncResponse)
	out.Conversations = a.chatOnly(res.GetConversations())
	out.Messages = slices.DeleteFunc(out.Messages, func(m *parleyv1.Message) bool { return m.GetConversationId() == a.accountConv })
	out.Positions = slices.DeleteFunc(out.Positions, func(c *parleyv1.Cursor) bool { return c.GetConversationId() == a.accountConv })
	return out
}

// aboutAccount reports whether ev concerns a's account conversation.
func (a account) aboutAccount(ev *parleyv1.SubscribeResponse) bool {
	return ev.GetMessage().GetConversationId() == a.accountConv && a.accountConv != "" ||
		ev.GetConversation().GetAdded().GetConversation().GetId() == a.accountConv ||
		ev.GetConversation().GetUpdated().GetId() == a.accountConv
}

func (a account) ctx() context.Context { return bearer(a.tokens.GetAccessToken()) }

// signUp registers username and logs it in.
func (e *env) signUp(username string, opts ...connect.ClientOption) account {
	e.t.Helper()
	c := e.auth(opts...)
	password := passwordOf(username)
	if _, err := c.Register(context.Background(), &parleyv1.RegisterRequest{
		Username: username, Password: password, DisplayName: "User " + username,
	}); err != nil {
		e.t.Fatalf("Register(%s): %v", username, err)
	}
	res, err := c.Login(context.Background(), &parleyv1.LoginRequest{
		Username: username, Password: password, DeviceName: "test", Platform: parleyv1.Platform_PLATFORM_CLI,
	})
	if err != nil {
		e.t.Fatalf("Login(%s): %v", username, err)
	}
	acc, err := e.db.GetAccountConversationID(context.Background(), res.GetUser().GetId())
	if err != nil {
		e.t.Fatalf("account conversation of %s: %v", username, err)
	}
	return account{user: res.GetUser(), password: password, tokens: res.GetTokens(), accountConv: acc}
}

// passwordOf is the password signUp and register give an account: distinct
// per account, and allowed by the password rules. Its letters and digits come
// in runs of at most two, so it never contains a username (three or more).
func passwordOf(username string) string {
	return "pw:" + strings.Join(strings.Split(username, ""), "~") + ":ok"
}

// register creates an account without logging in, so that it spends no login
// budget, and returns its profile. Its password is passwordOf(username).
func (e *env) register(username, displayName string, opts ...connect.ClientOption) *parleyv1.User {
	e.t.Helper()
	res, err := e.auth(opts...).Register(context.Background(), &parleyv1.RegisterRequest{
		Username: username, Password: passwordOf(username), DisplayName: displayName,
	})
	if err != nil {
		e.t.Fatalf("Register(%s): %v", username, err)
	}
	return res.GetUser()
}

// in returns the environment with its helpers failing t, for use in a subtest.
func (e *env) in(t testing.TB) *env {
	c := *e
	c.t = t
	return &c
}

// count returns the number of rows of a table, to prove that a failed request
// wrote nothing.
// chatConversations and chatMessages are what e.count counts for the
// conversations and messages users exchange: every user also has an account
// conversation (kind 3) that the server writes.
const (
	chatConversations = "conversations WHERE kind <> 3"
	chatMessages      = "messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.kind <> 3"
)

// count counts the rows of a table, or of a FROM clause like chatMessages.
func (e *env) count(table string) int {
	e.t.Helper()
	var n int
	if err := e.db.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		e.t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// wantCode fails the test unless err carries the Connect code want.
func wantCode(t testing.TB, err error, want connect.Code) {
	t.Helper()
	if got := connect.CodeOf(err); err == nil || got != want {
		t.Fatalf("got error %v (code %v), want code %v", err, connect.CodeOf(err), want)
	}
}
