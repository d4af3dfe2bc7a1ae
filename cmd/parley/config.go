package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/parley-chat/parley/server"
)

// config is everything `parley serve` and `parley migrate` can be told, by
// flag or by PARLEY_* environment variable (flags win).
type config struct {
	addr        string
	debugAddr   string
	databaseURL string
	dataDir     string
	tlsCert     string
	tlsKey      string
	logLevel    string
	logFormat   string
	shutdown    time.Duration
	server      server.Config
}

// envFlags registers flags whose defaults come from the environment.
type envFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	errs   []error
}

func (e *envFlags) env(name, def string) string {
	if v := e.getenv(name); v != "" {
		return v
	}
	return def
}

func (e *envFlags) string(p *string, name, env, def, help string) {
	e.fs.StringVar(p, name, e.env(env, def), help+" ("+env+")")
}

func (e *envFlags) duration(p *time.Duration, name, env string, def time.Duration, help string) {
	d, err := time.ParseDuration(e.env(env, def.String()))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
	}
	e.fs.DurationVar(p, name, d, help+" ("+env+")")
}

func (e *envFlags) int(p *int, name, env string, def int, help string) {
	n, err := strconv.Atoi(e.env(env, strconv.Itoa(def)))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
	}
	e.fs.IntVar(p, name, n, help+" ("+env+")")
}

func (e *envFlags) uint(p *uint, name, env string, def uint, help string) {
	n, err := strconv.ParseUint(e.env(env, strconv.FormatUint(uint64(def), 10)), 10, 32)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
	}
	e.fs.UintVar(p, name, uint(n), help+" ("+env+")")
}

func (e *envFlags) int64(p *int64, name, env string, def int64, help string) {
	n, err := strconv.ParseInt(e.env(env, strconv.FormatInt(def, 10)), 10, 64)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
	}
	e.fs.Int64Var(p, name, n, help+" ("+env+")")
}

func (e *envFlags) bool(p *bool, name, env string, def bool, help string) {
	b, err := strconv.ParseBool(e.env(env, strconv.FormatBool(def)))
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", env, err))
	}
	e.fs.BoolVar(p, name, b, help+" ("+env+")")
}

func parseConfig(name string, args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("parley "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &envFlags{fs: fs, getenv: getenv}
	def := server.DefaultConfig()
	var c config
	var cors string
	var argonMem, argonIter, argonPar uint
	e.string(&c.addr, "addr", "PARLEY_ADDR", ":8080", "address to listen on")
	e.string(&c.debugAddr, "debug-addr", "PARLEY_DEBUG_ADDR", "", "address for Go's profiler (/debug/pprof/); keep it private (empty: off)")
	e.string(&c.databaseURL, "database-url", "PARLEY_DATABASE_URL", "", "PostgreSQL URL; empty starts an embedded server")
	e.string(&c.server.RedisURL, "redis-url", "PARLEY_REDIS_URL", "", "Redis URL (redis://host:6379) to fan events out across nodes; empty: one node")
	e.string(&c.server.NodeURL, "node-url", "PARLEY_NODE_URL", "", "URL the other nodes reach this one at, for the calls it hosts (empty: from -addr)")
	e.duration(&c.server.CallLease, "call-lease", "PARLEY_CALL_LEASE", def.CallLease, "how long a node's claim on a call's media lasts in Redis unrenewed (a dead node's calls move after it)")
	e.string(&c.dataDir, "data-dir", "PARLEY_DATA_DIR", "./data", "directory for the embedded PostgreSQL (under postgres/)")
	e.string(&c.tlsCert, "tls-cert", "PARLEY_TLS_CERT", "", "TLS certificate file (PEM); with -tls-key serves HTTPS")
	e.string(&c.tlsKey, "tls-key", "PARLEY_TLS_KEY", "", "TLS private key file (PEM)")
	e.string(&cors, "cors-origins", "PARLEY_CORS_ORIGINS", "", "comma-separated browser origins allowed to call the API")
	e.string(&c.server.WebDir, "web-dir", "PARLEY_WEB_DIR", "", "directory of a built web client to serve at / (such as web/dist); empty: none")
	e.string(&c.logLevel, "log-level", "PARLEY_LOG_LEVEL", "info", "debug, info, warn or error")
	e.string(&c.logFormat, "log-format", "PARLEY_LOG_FORMAT", "text", "text or json")
	e.duration(&c.shutdown, "shutdown-timeout", "PARLEY_SHUTDOWN_TIMEOUT", 30*time.Second, "how long to wait for requests to finish on SIGTERM")
	e.duration(&c.server.AccessTokenTTL, "access-token-ttl", "PARLEY_ACCESS_TOKEN_TTL", def.AccessTokenTTL, "access token lifetime")
	e.duration(&c.server.RefreshTokenTTL, "refresh-token-ttl", "PARLEY_REFRESH_TOKEN_TTL", def.RefreshTokenTTL, "refresh token (idle session) lifetime")
	e.int(&c.server.MaxRequestBytes, "max-request-bytes", "PARLEY_MAX_REQUEST_BYTES", def.MaxRequestBytes, "largest accepted request message")
	e.duration(&c.server.RequestBodyTimeout, "request-body-timeout", "PARLEY_REQUEST_BODY_TIMEOUT", def.RequestBodyTimeout, "how long a request body may take to arrive before the request is cut off (0: no limit)")
	e.int64(&c.server.UploadMinRate, "upload-min-rate", "PARLEY_UPLOAD_MIN_RATE", def.UploadMinRate, "bytes per second a local-store upload must average, after -request-body-timeout of grace (0: no limit)")
	e.uint(&argonMem, "argon2-memory-kib", "PARLEY_ARGON2_MEMORY_KIB", uint(def.Password.MemoryKiB), "argon2id memory per password hash, KiB")
	e.uint(&argonIter, "argon2-iterations", "PARLEY_ARGON2_ITERATIONS", uint(def.Password.Iterations), "argon2id passes per password hash")
	e.uint(&argonPar, "argon2-parallelism", "PARLEY_ARGON2_PARALLELISM", uint(def.Password.Parallelism), "argon2id lanes per password hash")
	e.int(&c.server.LoginPerSource.Burst, "login-limit-source", "PARLEY_LOGIN_LIMIT_SOURCE", def.LoginPerSource.Burst, "failed logins per account from one client address or known device per 10 minutes (0: no limit)")
	e.int(&c.server.LoginPerAccount.Burst, "login-limit-account", "PARLEY_LOGIN_LIMIT_ACCOUNT", def.LoginPerAccount.Burst, "failed logins per account per hour from devices and addresses it has not used; shared by the nodes through Redis (0: no limit)")
	e.int(&c.server.LoginPerAddress.Burst, "login-limit-address", "PARLEY_LOGIN_LIMIT_ADDRESS", def.LoginPerAddress.Burst, "failed logins per client address per 10 minutes, across accounts (0: no limit)")
	e.int(&c.server.RegisterPerAddress.Burst, "register-limit-address", "PARLEY_REGISTER_LIMIT_ADDRESS", def.RegisterPerAddress.Burst, "registrations per client address per hour (0: no limit)")
	e.int(&c.server.SendPerUser.Burst, "send-limit", "PARLEY_SEND_LIMIT", def.SendPerUser.Burst, "messages a user may send per 10 seconds (0: no limit)")
	e.int(&c.server.FriendRequests.Burst, "friend-request-limit", "PARLEY_FRIEND_REQUEST_LIMIT", def.FriendRequests.Burst, "friend requests a user may send per hour (0: no limit)")
	e.duration(&c.server.RecallWindow, "recall-window", "PARLEY_RECALL_WINDOW", def.RecallWindow, "how long after sending a message may be recalled")
	e.int(&c.server.AppendWorkers, "append-workers", "PARLEY_APPEND_WORKERS", def.AppendWorkers, "Send transactions (group commits) running at once")
	e.int(&c.server.AppendBatch, "append-batch", "PARLEY_APPEND_BATCH", def.AppendBatch, "most messages one Send transaction commits")
	e.int(&c.server.StreamBuffer, "stream-buffer", "PARLEY_STREAM_BUFFER", def.StreamBuffer, "events a Subscribe stream may fall behind before it is closed")
	e.duration(&c.server.HeartbeatInterval, "heartbeat", "PARLEY_HEARTBEAT", def.HeartbeatInterval, "interval of Subscribe heartbeats")
	e.int(&c.server.MaxGroupMembers, "max-group-members", "PARLEY_MAX_GROUP_MEMBERS", def.MaxGroupMembers, "most members of one group, owner included")
	var stunURLs, turnURLs string
	e.duration(&c.server.CallRingTimeout, "call-ring-timeout", "PARLEY_CALL_RING_TIMEOUT", def.CallRingTimeout, "how long a call rings unanswered before it is missed")
	e.string(&stunURLs, "stun-urls", "PARLEY_STUN_URLS", "", "comma-separated STUN server URLs handed to callers (stun:host:3478)")
	e.string(&turnURLs, "turn-urls", "PARLEY_TURN_URLS", "", "comma-separated TURN server URLs handed to callers (turn:host:3478?transport=udp)")
	e.string(&c.server.ICE.TURNSecret, "turn-secret", "PARLEY_TURN_SECRET", "", "secret shared with the TURN server for time-limited credentials (coturn's static-auth-secret)")
	e.duration(&c.server.ICE.TURNTTL, "turn-ttl", "PARLEY_TURN_TTL", def.ICE.TURNTTL, "how long a TURN credential works")
	var publicIPs string
	var portMin, portMax uint
	e.string(&c.server.RTC.UDPAddr, "rtc-udp-addr", "PARLEY_RTC_UDP_ADDR", "", "one UDP address (such as :3478) shared by every call's media (ICE UDP mux); empty: a port per peer")
	e.uint(&portMin, "rtc-udp-port-min", "PARLEY_RTC_UDP_PORT_MIN", 0, "lowest UDP port for call media without -rtc-udp-addr (0: any)")
	e.uint(&portMax, "rtc-udp-port-max", "PARLEY_RTC_UDP_PORT_MAX", 0, "highest UDP port for call media without -rtc-udp-addr (0: any)")
	e.string(&publicIPs, "rtc-public-ips", "PARLEY_RTC_PUBLIC_IPS", "", "comma-separated public IPs to advertise for call media (NAT 1:1)")
	e.bool(&c.server.RTC.Loopback, "rtc-loopback", "PARLEY_RTC_LOOPBACK", false, "advertise loopback addresses for call media too, for clients on this machine (tests, a single-machine setup)")
	m := &c.server.Media
	var imageTypes, voiceTypes, videoTypes, fileTypes string
	e.string(&m.Dir, "media-dir", "PARLEY_MEDIA_DIR", "", "directory of the local media store (empty: <data-dir>/media)")
	e.string(&m.PublicURL, "public-url", "PARLEY_PUBLIC_URL", "", "URL clients reach this server at, for local media URLs (empty: from each request)")
	e.string(&m.S3.Endpoint, "s3-endpoint", "PARLEY_S3_ENDPOINT", "", "S3-compatible endpoint URL; set to keep media in S3 instead of the local store")
	e.string(&m.S3.Bucket, "s3-bucket", "PARLEY_S3_BUCKET", "parley-media", "S3 bucket (created when missing)")
	e.string(&m.S3.AccessKey, "s3-access-key", "PARLEY_S3_ACCESS_KEY", "", "S3 access key")
	e.string(&m.S3.SecretKey, "s3-secret-key", "PARLEY_S3_SECRET_KEY", "", "S3 secret key")
	e.string(&m.S3.Region, "s3-region", "PARLEY_S3_REGION", "us-east-1", "S3 region")
	e.bool(&m.S3.PathStyle, "s3-path-style", "PARLEY_S3_PATH_STYLE", false, "address the bucket in the URL path, as most self-hosted servers need")
	e.int64(&m.MaxImageBytes, "media-max-image-bytes", "PARLEY_MEDIA_MAX_IMAGE_BYTES", def.Media.MaxImageBytes, "largest image upload")
	e.int64(&m.MaxVoiceBytes, "media-max-voice-bytes", "PARLEY_MEDIA_MAX_VOICE_BYTES", def.Media.MaxVoiceBytes, "largest voice upload")
	e.int64(&m.MaxVideoBytes, "media-max-video-bytes", "PARLEY_MEDIA_MAX_VIDEO_BYTES", def.Media.MaxVideoBytes, "largest video upload")
	e.int64(&m.MaxFileBytes, "media-max-file-bytes", "PARLEY_MEDIA_MAX_FILE_BYTES", def.Media.MaxFileBytes, "largest file upload")
	e.duration(&m.MaxVoiceDuration, "media-max-voice-duration", "PARLEY_MEDIA_MAX_VOICE_DURATION", def.Media.MaxVoiceDuration, "longest voice note")
	e.string(&imageTypes, "media-image-types", "PARLEY_MEDIA_IMAGE_TYPES", strings.Join(def.Media.ImageTypes, ","), "content types allowed for images")
	e.string(&voiceTypes, "media-voice-types", "PARLEY_MEDIA_VOICE_TYPES", strings.Join(def.Media.VoiceTypes, ","), "content types allowed for voice notes")
	e.string(&videoTypes, "media-video-types", "PARLEY_MEDIA_VIDEO_TYPES", strings.Join(def.Media.VideoTypes, ","), "content types allowed for videos")
	e.string(&fileTypes, "media-file-types", "PARLEY_MEDIA_FILE_TYPES", strings.Join(def.Media.FileTypes, ","), "content types allowed for files (* any)")
	e.int64(&m.DecodeBudget, "media-decode-budget", "PARLEY_MEDIA_DECODE_BUDGET", def.Media.DecodeBudget, "bytes of memory that decoding images for thumbnails may use at once on this node (an image needing more is stored without a thumbnail)")
	e.duration(&m.UploadTTL, "media-upload-ttl", "PARLEY_MEDIA_UPLOAD_TTL", def.Media.UploadTTL, "how long an upload may take before it is dropped")
	e.duration(&m.URLTTL, "media-url-ttl", "PARLEY_MEDIA_URL_TTL", def.Media.URLTTL, "how long a download URL works")
	e.duration(&m.SweepInterval, "media-sweep-interval", "PARLEY_MEDIA_SWEEP_INTERVAL", def.Media.SweepInterval, "how often expired uploads are deleted")
	e.int(&m.UploadsPerUser.Burst, "upload-limit", "PARLEY_UPLOAD_LIMIT", def.Media.UploadsPerUser.Burst, "uploads a user may start per 10 minutes (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if len(e.errs) > 0 {
		return c, fmt.Errorf("bad environment: %v", e.errs)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return c, fmt.Errorf("set both PARLEY_TLS_CERT and PARLEY_TLS_KEY, or neither")
	}
	if c.server.MaxGroupMembers < 1 {
		return c, fmt.Errorf("PARLEY_MAX_GROUP_MEMBERS must be at least 1")
	}
	if argonPar == 0 || argonPar > 255 || argonIter == 0 || argonMem < 8*argonPar {
		return c, fmt.Errorf("argon2 parameters out of range: memory ≥ 8×parallelism KiB, iterations ≥ 1, parallelism 1–255")
	}
	c.server.Password = server.PasswordParams{MemoryKiB: uint32(argonMem), Iterations: uint32(argonIter), Parallelism: uint8(argonPar)}
	c.server.SessionCacheTTL = def.SessionCacheTTL
	c.server.LoginPerSource.Per = def.LoginPerSource.Per
	c.server.LoginPerAccount.Per = def.LoginPerAccount.Per
	c.server.LoginPerAddress.Per = def.LoginPerAddress.Per
	c.server.RegisterPerAddress.Per = def.RegisterPerAddress.Per
	c.server.SendPerUser.Per = def.SendPerUser.Per
	c.server.FriendRequests.Per = def.FriendRequests.Per
	c.server.MaxStreamsPerUser = def.MaxStreamsPerUser
	c.server.RedisChannel = def.RedisChannel
	m.UploadsPerUser.Per = def.Media.UploadsPerUser.Per
	m.DecodeWait = def.Media.DecodeWait
	m.ImageTypes, m.VoiceTypes, m.VideoTypes, m.FileTypes = list(imageTypes), list(voiceTypes), list(videoTypes), list(fileTypes)
	if m.Dir == "" {
		m.Dir = filepath.Join(c.dataDir, "media")
	}
	if m.PublicURL != "" {
		if u, err := url.Parse(m.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("PARLEY_PUBLIC_URL must be an http or https URL such as https://chat.example.com, not %q", m.PublicURL)
		}
	}
	if m.UploadTTL <= 0 || m.URLTTL <= 0 || m.SweepInterval <= 0 {
		return c, fmt.Errorf("PARLEY_MEDIA_UPLOAD_TTL, PARLEY_MEDIA_URL_TTL and PARLEY_MEDIA_SWEEP_INTERVAL must be positive")
	}
	c.server.CORSOrigins = list(cors)
	c.server.ICE.STUNURLs, c.server.ICE.TURNURLs = list(stunURLs), list(turnURLs)
	c.server.SignalsGrace = def.SignalsGrace
	c.server.RTC.PublicIPs = list(publicIPs)
	if (portMin == 0) != (portMax == 0) || portMin > portMax || portMax > 65535 {
		return c, fmt.Errorf("set both PARLEY_RTC_UDP_PORT_MIN and PARLEY_RTC_UDP_PORT_MAX, lowest first, or neither")
	}
	c.server.RTC.UDPPortMin, c.server.RTC.UDPPortMax = uint16(portMin), uint16(portMax)
	if u := c.server.NodeURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return c, fmt.Errorf("PARLEY_NODE_URL must be an http or https URL such as http://10.0.0.5:8080, not %q", u)
		}
	}
	if c.server.CallLease < time.Second {
		return c, fmt.Errorf("PARLEY_CALL_LEASE must be at least 1s")
	}
	if c.server.CallRingTimeout <= 0 {
		return c, fmt.Errorf("PARLEY_CALL_RING_TIMEOUT must be positive")
	}
	if len(c.server.ICE.TURNURLs) > 0 && (c.server.ICE.TURNSecret == "" || c.server.ICE.TURNTTL <= 0) {
		return c, fmt.Errorf("PARLEY_TURN_URLS needs PARLEY_TURN_SECRET and a positive PARLEY_TURN_TTL: TURN servers are handed out with time-limited credentials only")
	}
	return c, nil
}

// list splits a comma-separated setting, dropping empty items.
func list(s string) []string {
	var out []string
	for _, o := range strings.Split(s, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

func (c config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("PARLEY_LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("PARLEY_LOG_FORMAT must be text or json, not %q", c.logFormat)
	}
}

func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
