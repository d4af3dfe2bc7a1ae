package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/cors"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
	"github.com/parley-chat/parley/rtc"
	"github.com/parley-chat/parley/storage"
)

// Config are the server's tunables. DefaultConfig gives production values.
type Config struct {
	// AccessTokenTTL is how long an access token works.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is how long an unused refresh token (and its session) lives.
	RefreshTokenTTL time.Duration
	// SessionCacheTTL is how long a node trusts that a session is active
	// before asking the database again; it bounds how late another node
	// notices a revocation.
	SessionCacheTTL time.Duration
	// Password are the argon2id parameters for new hashes.
	Password PasswordParams
	// LoginPerSource, LoginPerAddress and LoginPerAccount budget failed
	// logins (successes do not count): per account from one source (a client
	// address, or a known device), per address across accounts, and per
	// account from devices and addresses the account has not used (shared by
	// the nodes through Redis when RedisURL is set); see loginThrottle.
	// RegisterPerAddress throttles mass registration. A zero Burst disables one.
	LoginPerSource     Rate
	LoginPerAccount    Rate
	LoginPerAddress    Rate
	RegisterPerAddress Rate
	// CORSOrigins are the browser origins allowed to call the API; empty
	// means no cross-origin access.
	CORSOrigins []string
	// WebDir, when set, is a directory of static files (a built web client)
	// served at / to anyone: it must hold nothing private.
	WebDir string
	// MaxRequestBytes bounds the size of one request message.
	MaxRequestBytes int
	// RequestBodyTimeout is how long a request's body may take to arrive
	// once its headers have (the request is then cut off); zero means no
	// limit. An upload to the local store must instead keep up
	// UploadMinRate bytes per second after this grace (see bodyDeadlines);
	// zero means no limit on uploads.
	RequestBodyTimeout time.Duration
	UploadMinRate      int64
	// SendPerUser throttles Send per user.
	SendPerUser Rate
	// FriendRequests throttles SendFriendRequest per user.
	FriendRequests Rate
	// StreamBuffer is how many events a Subscribe stream may fall behind
	// before it is closed and must resume from its cursors.
	StreamBuffer int
	// AppendWorkers is how many transactions of Sends (group commits) run
	// at once; AppendBatch bounds the messages in one.
	AppendWorkers int
	AppendBatch   int
	// MaxStreamsPerUser bounds a user's open Subscribe streams per node.
	MaxStreamsPerUser int
	// HeartbeatInterval is how often Subscribe sends positions.
	HeartbeatInterval time.Duration
	// RecallWindow is how long after sending a sender may recall a message.
	RecallWindow time.Duration
	// RedisURL, when set, fans events out to every node sharing the
	// database through Redis pub/sub; empty means a single node.
	RedisURL string
	// RedisChannel is the pub/sub channel the nodes share.
	RedisChannel string
	// MaxGroupMembers bounds a group's current members, owner included.
	MaxGroupMembers int
	// Media is where uploads go and what they may be.
	Media MediaConfig
	// CallRingTimeout is how long a call rings unanswered before it ends
	// as missed.
	CallRingTimeout time.Duration
	// SignalsGrace is how long a call participant whose Signals stream
	// dropped may take to open it again before they count as having left.
	SignalsGrace time.Duration
	// ICE are the STUN and TURN servers handed to callers.
	ICE ICEConfig
	// RTC is the media server's networking and room limits.
	RTC rtc.Config
	// NodeURL is the URL other nodes reach this one at (such as
	// http://10.0.0.5:8080), to pass it the signaling of calls whose media
	// room it hosts. Required with RedisURL.
	NodeURL string
	// NodeClient is the HTTP client for requests to other nodes; nil builds
	// one (h2c for http URLs, HTTP/2 over TLS for https ones).
	NodeClient *http.Client
	// CallLease is how long a node's claim on a call's media room lasts in
	// Redis without renewal (it renews every third of it): how long a call
	// whose node died waits before another node hosts it.
	CallLease time.Duration
	// Liveness, if set, says why the process should be restarted (the
	// embedded database cannot be brought back), nil while it should not;
	// /healthz fails with its error. A database that is down but coming back
	// fails only /readyz.
	Liveness func() error
}

// DefaultConfig returns the production configuration.
func DefaultConfig() Config {
	return Config{
		AccessTokenTTL:     15 * time.Minute,
		RefreshTokenTTL:    30 * 24 * time.Hour,
		SessionCacheTTL:    5 * time.Second,
		Password:           OWASPPasswordParams,
		LoginPerSource:     Rate{Burst: 5, Per: 10 * time.Minute},
		LoginPerAccount:    Rate{Burst: 20, Per: time.Hour},
		LoginPerAddress:    Rate{Burst: 100, Per: 10 * time.Minute},
		RegisterPerAddress: Rate{Burst: 20, Per: time.Hour},
		MaxRequestBytes:    1 << 20,
		RequestBodyTimeout: 10 * time.Second,
		UploadMinRate:      4 << 10,
		SendPerUser:        Rate{Burst: 200, Per: 10 * time.Second},
		FriendRequests:     Rate{Burst: 50, Per: time.Hour},
		StreamBuffer:       1024,
		AppendWorkers:      2,
		AppendBatch:        256,
		MaxStreamsPerUser:  10,
		HeartbeatInterval:  30 * time.Second,
		RecallWindow:       2 * time.Minute,
		RedisChannel:       "parley:events",
		MaxGroupMembers:    500,
		Media:              DefaultMediaConfig(),
		CallRingTimeout:    45 * time.Second,
		SignalsGrace:       30 * time.Second,
		ICE:                ICEConfig{TURNTTL: 12 * time.Hour},
		CallLease:          10 * time.Second,
	}
}

// Server holds the services and builds the HTTP handler that serves them.
type Server struct {
	db      *db.DB
	logger  *slog.Logger
	cfg     Config
	tokens  *tokens
	auth    *authService
	msgs    *messagesService
	groups  *groupsService
	cts     *contactsService
	media   *mediaService
	calls   *callsService
	local   *storage.Local // nil when media is on S3
	sweeper *mediaSweeper
	metrics *metrics
	reg     *prometheus.Registry
	health  *healthChecker
	relay   *relay
	pres    *presence
	watch   *sessionWatch
}

// New builds a server on an open, migrated database.
func New(ctx context.Context, d *db.DB, cfg Config, logger *slog.Logger) (*Server, error) {
	toks, err := loadTokens(ctx, d, cfg.AccessTokenTTL, cfg.SessionCacheTTL)
	if err != nil {
		return nil, err
	}
	hasher, err := newPasswordHasher(cfg.Password, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := reg.Register(hasher.checks); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	h := newHub(cfg.StreamBuffer)
	if cfg.RedisURL != "" {
		if h.relay, err = newRelay(cfg.RedisURL, cfg.RedisChannel, h, logger); err != nil {
			return nil, err
		}
	}
	store, local, err := newStore(ctx, d, cfg.Media)
	if err != nil {
		if h.relay != nil {
			h.relay.Close()
		}
		return nil, err
	}
	calls, err := newCallsService(d, h, cfg, logger)
	if err != nil {
		if h.relay != nil {
			h.relay.Close()
		}
		return nil, err
	}
	pres := newPresence(d, h, h.relay, logger)
	msgs := newMessagesService(d, h, toks, pres, newCommitter(d, h, m, max(cfg.AppendWorkers, 1), max(cfg.AppendBatch, 1), logger), cfg)
	groups := newGroupsService(d, h, msgs, cfg)
	groups.calls = calls
	return &Server{
		relay:   h.relay,
		db:      d,
		logger:  logger,
		cfg:     cfg,
		tokens:  toks,
		auth:    newAuthService(d, hasher, toks, h, cfg, logger),
		msgs:    msgs,
		groups:  groups,
		cts:     newContactsService(d, h, msgs, cfg),
		media:   newMediaService(d, store, cfg.Media, logger),
		calls:   calls,
		local:   local,
		sweeper: newMediaSweeper(d, store, cfg.Media.SweepInterval, logger),
		pres:    pres,
		watch:   newSessionWatch(h, toks.sessions, sessionCheckInterval, logger),
		metrics: m,
		reg:     reg,
		health: &healthChecker{db: d, relay: h.relay, live: cfg.Liveness, services: map[string]bool{
			parleyv1connect.AuthServiceName:     true,
			parleyv1connect.MessagesServiceName: true,
			parleyv1connect.GroupsServiceName:   true,
			parleyv1connect.ContactsServiceName: true,
			parleyv1connect.MediaServiceName:    true,
			parleyv1connect.CallsServiceName:    true,
		}},
	}, nil
}

// Close stops the server's background work (the Send committers, presence,
// the upload sweeper, the call ringing timers, the Redis relay). Call it
// after the HTTP server has drained its requests.
func (s *Server) Close() {
	s.msgs.appends.Close()
	s.watch.Close()
	s.sweeper.Close()
	s.calls.Close()
	s.pres.Close()
	if s.relay != nil {
		s.relay.Close()
	}
}

// publicProcedures may be called without an access token.
var publicProcedures = map[string]bool{
	parleyv1connect.AuthServiceRegisterProcedure: true,
	parleyv1connect.AuthServiceLoginProcedure:    true,
	parleyv1connect.AuthServiceRefreshProcedure:  true,
}

// Handler returns the HTTP handler for every route: the Connect services
// (Connect, gRPC and gRPC-Web protocols), gRPC health and reflection,
// /healthz, /readyz and /metrics, wrapped in CORS for the allowed origins,
// with a deadline on every request body.
func (s *Server) Handler() http.Handler {
	opts := []connect.HandlerOption{
		connect.WithInterceptors(
			observeInterceptor{logger: s.logger, metrics: s.metrics},
			errorInterceptor{logger: s.logger},
			textInterceptor{text: &textRule{}},
			validate.NewInterceptor(),
		),
		connect.WithReadMaxBytes(s.cfg.MaxRequestBytes),
		// Compressing small messages costs more CPU than it saves bytes.
		connect.WithCompressMinBytes(1024),
		// gzip at its fastest level: chat text still shrinks by most of what
		// the default level gets, for a fraction of the CPU, which matters
		// for catch-up batches of hundreds of messages. klauspost/compress
		// writes the same standard gzip faster than compress/gzip: catch-up
		// of 10,000 entries took 12 % less CPU (BenchmarkCatchUp).
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &gzip.Reader{} },
			func() connect.Compressor {
				w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // BestSpeed is a valid level: no error
				return w
			},
		),
	}
	// Authentication runs before the request is decoded (connectrpc.com/authn).
	// It wraps the API services only: health, reflection and metrics are for
	// load balancers and operators and carry no user data.
	authMiddleware := authn.NewMiddleware(s.tokens.authenticate(publicProcedures))

	mux := http.NewServeMux()
	handle := func(path string, h http.Handler) {
		mux.Handle(path, authMiddleware.Wrap(withGETMessageCheck(withResponseController(h))))
	}
	handle(parleyv1connect.NewAuthServiceHandler(s.auth, opts...))
	handle(parleyv1connect.NewMessagesServiceHandler(s.msgs, opts...))
	handle(parleyv1connect.NewGroupsServiceHandler(s.groups, opts...))
	handle(parleyv1connect.NewContactsServiceHandler(s.cts, opts...))
	handle(parleyv1connect.NewCallsServiceHandler(s.calls, opts...))
	mediaPath, mediaHandler := parleyv1connect.NewMediaServiceHandler(s.media, opts...)
	handle(mediaPath, withOrigin(mediaHandler))
	if s.local != nil {
		// Uploads and downloads of the local store: the URL's signature
		// is the permission, so no access token is asked for.
		mux.Handle(storage.LocalPrefix, s.local.Handler())
	}

	services := []string{
		parleyv1connect.AuthServiceName,
		parleyv1connect.MessagesServiceName,
		parleyv1connect.GroupsServiceName,
		parleyv1connect.ContactsServiceName,
		parleyv1connect.MediaServiceName,
		parleyv1connect.CallsServiceName,
		grpchealth.HealthV1ServiceName,
		grpcreflect.ReflectV1ServiceName,
		grpcreflect.ReflectV1AlphaServiceName,
	}
	reflector := grpcreflect.NewStaticReflector(services...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(s.health))
	mux.HandleFunc("GET /healthz", s.health.liveness)
	mux.HandleFunc("GET /readyz", s.health.readiness)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	if s.cfg.WebDir != "" {
		// The least specific pattern: every route above wins over it.
		mux.Handle("/", webHandler(s.cfg.WebDir))
	}

	// Outermost: the deadlines need net/http's own ResponseWriter.
	deadlines := bodyDeadlines{limit: s.cfg.RequestBodyTimeout, minRate: s.cfg.UploadMinRate, streaming: clientStreamingPaths(services)}
	return deadlines.wrap(s.withCORS(mux))
}

// webHandler serves the static files of a web client from dir, for GET and
// HEAD only.
func webHandler(dir string) http.Handler {
	files := http.FileServerFS(os.DirFS(dir))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	})
}

func (s *Server) withCORS(h http.Handler) http.Handler {
	if len(s.cfg.CORSOrigins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins: s.cfg.CORSOrigins,
		AllowedMethods: append(connectcors.AllowedMethods(), http.MethodPut), // PUT: local uploads
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         7200,
	}).Handler(h)
}
