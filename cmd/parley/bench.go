package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

const benchHelp = `Usage: parley bench -target URL -workload w1|w2|w3|w4|w5|sfu|rpc [flags]

Drives a running "parley serve" over the network with the gRPC protocol on
h2c and prints a table (with -json, one JSON object instead). It registers
its own users under a random prefix. Start the server with its limits off
and cheap password hashing, for example:

  PARLEY_REGISTER_LIMIT_ADDRESS=0 PARLEY_LOGIN_LIMIT_ADDRESS=0 \
  PARLEY_LOGIN_LIMIT_ACCOUNT=0 PARLEY_SEND_LIMIT=0 \
  PARLEY_ARGON2_MEMORY_KIB=64 PARLEY_ARGON2_ITERATIONS=1 parley serve

Workloads:
  w1  -pairs N -rate R -duration D: open-loop 1:1 messaging; ack and
      send→deliver latency from the scheduled send time, loss and order
  w2  -pairs N [-step D -max-senders M -p99-limit L]: closed-loop senders
      over N conversations, doubled every step until p99 ack exceeds L, then
      bisected between the last level within L and the first beyond;
      the highest sustained durable rate, loss checked by receivers
  w3  -members N [-rate R -duration D -step S -max-rate M -deliver-limit L
      -senders K]: one group of N members, each with a stream open; K
      members send at R msg/s for D, then at doubling rates for S each
      until p99 delivery exceeds L; deliveries/s and delivery latency from
      the scheduled send time. Groups over 500 members need the server's
      PARLEY_MAX_GROUP_MEMBERS raised
  w4  -messages M: M messages reach an offline user, who then subscribes
      from its cursor; time until the last one arrives
  w5  -streams N [-server-pid PID]: N idle Subscribe streams; server RSS
      per stream (VmRSS from /proc/PID/status)
  sfu -subscribers N [-rate R -step S -max-rate M -payload B]: a video
      call of one publisher and N subscribers (Pion bots, at most 15),
      joined through Signals; the publisher sends synthetic VP8 RTP of B-byte
      payloads at R packets/s (200 unless set), doubled every step up to M
      (12800 unless set) until the subscribers lose 0.5 % of a step's
      packets, then bisected; the server's CPU time per forwarded packet
      (process_cpu_seconds_total from its /metrics) and the highest
      forwarded rate within the loss limit (a rate that loses too much
      is run once more before it counts as failed)
  rpc -pairs N [-step D -max-senders M -p99-limit L]: W2's ramp over the
      same connections, of GetIceServers calls by N users: an RPC that
      touches no database, so its best rate is the ceiling the RPC layer
      alone sets on this machine, W2's yardstick

W2 and rpc also report each level's CPU per operation: the server's (from
its /metrics), the load tool's, and the rest of the machine's (/proc/stat;
the database's, when it shares the machine).

Flags:
`

// limitsHint is added to errors that suggest the server's limits are on.
const limitsHint = "start the server with PARLEY_REGISTER_LIMIT_ADDRESS=0 PARLEY_LOGIN_LIMIT_ADDRESS=0 PARLEY_LOGIN_LIMIT_ACCOUNT=0 PARLEY_SEND_LIMIT=0"

// benchConfig is what `parley bench` is told by its flags.
type benchConfig struct {
	target       string
	workload     string
	pairs        int
	rate         float64
	duration     time.Duration
	messages     int
	senders      int
	streams      int
	serverPID    int
	hold         time.Duration
	setup        int
	json         bool
	cpuProfile   string
	step         time.Duration
	maxSenders   int
	p99Limit     time.Duration
	conns        int
	members      int
	maxRate      float64
	deliverLimit time.Duration
	subscribers  int
	payload      int
}

func parseBenchConfig(args []string, stderr io.Writer) (benchConfig, error) {
	fs := flag.NewFlagSet("parley bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchHelp)
		fs.PrintDefaults()
	}
	var c benchConfig
	fs.StringVar(&c.target, "target", "http://127.0.0.1:8080", "base URL of the server (h2c)")
	fs.StringVar(&c.workload, "workload", "w1", "w1, w2, w3, w4, w5, sfu or rpc")
	fs.IntVar(&c.pairs, "pairs", 10, "w1, w2: sender/receiver pairs (conversations); rpc: users calling")
	fs.Float64Var(&c.rate, "rate", 200, "w1: total messages per second over all pairs; w3: the fixed rate into the group, 20 unless set; sfu: the publisher's first packets/s")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "w1, w3: how long to send at -rate")
	fs.IntVar(&c.members, "members", 500, "w3: members of the group, each with a stream open")
	fs.Float64Var(&c.maxRate, "max-rate", 2560, "w3: the highest rate the ramp tries, messages per second; sfu: the publisher's highest packets/s, 12800 unless set")
	fs.IntVar(&c.subscribers, "subscribers", 8, "sfu: subscribers receiving the publisher's video, 1 to 15")
	fs.IntVar(&c.payload, "payload", 1100, "sfu: bytes of VP8 payload in each RTP packet, 16 to 1200")
	fs.DurationVar(&c.deliverLimit, "deliver-limit", 100*time.Millisecond, "w3: stop the ramp when p99 delivery latency exceeds this")
	fs.IntVar(&c.messages, "messages", 10000, "w4: messages sent to the offline user")
	fs.IntVar(&c.senders, "senders", 8, "w3: members who send; w4: concurrent Sends during the burst")
	fs.IntVar(&c.streams, "streams", 1000, "w5: idle Subscribe streams to open")
	fs.IntVar(&c.serverPID, "server-pid", 0, "w5: server process id, to read its RSS (0: do not)")
	fs.DurationVar(&c.hold, "hold", 0, "w5: keep the streams open this long after measuring, to inspect the server")
	fs.DurationVar(&c.step, "step", 5*time.Second, "w2, w3, sfu: how long each level of concurrency (w3, sfu: rate) runs")
	fs.IntVar(&c.maxSenders, "max-senders", 512, "w2: the most concurrent senders to try")
	fs.DurationVar(&c.p99Limit, "p99-limit", 50*time.Millisecond, "w2: stop when p99 ack latency exceeds this")
	fs.IntVar(&c.setup, "setup-concurrency", 16, "concurrent calls while registering users and opening streams")
	fs.IntVar(&c.conns, "conns", 32, "HTTP/2 connections the simulated users spread over, as devices have their own")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of a table")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the bench's own CPU profile to this file (the load tool shares the machine it measures)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.workload == "w3" && !set["rate"] {
		c.rate = 20 // W3's figure of merit is latency at a modest group rate
	}
	if c.workload == "sfu" && !set["max-rate"] {
		c.maxRate = 12800 // 200 packets/s doubled six times
	}
	switch {
	case !slices.Contains([]string{"w1", "w2", "w3", "w4", "w5", "sfu", "rpc"}, c.workload):
		return c, fmt.Errorf("-workload must be w1, w2, w3, w4, w5, sfu or rpc, not %q", c.workload)
	case c.subscribers < 1 || c.subscribers > sfuMaxSubscribers:
		return c, fmt.Errorf("-subscribers must be 1 to %d: a video call admits 16 participants", sfuMaxSubscribers)
	case c.payload < 16 || c.payload > 1200:
		return c, fmt.Errorf("-payload must be 16 to 1200 bytes")
	case c.members < 1 || c.maxRate <= 0 || c.deliverLimit <= 0:
		return c, fmt.Errorf("-members, -max-rate and -deliver-limit must be positive")
	case c.step <= 0 || c.maxSenders < 1 || c.p99Limit <= 0:
		return c, fmt.Errorf("-step, -max-senders and -p99-limit must be positive")
	case c.pairs < 1 || c.rate <= 0 || c.duration <= 0:
		return c, fmt.Errorf("-pairs, -rate and -duration must be positive")
	case c.messages < 1 || c.senders < 1 || c.streams < 1 || c.setup < 1 || c.conns < 1:
		return c, fmt.Errorf("-messages, -senders, -streams, -setup-concurrency and -conns must be positive")
	}
	c.target = strings.TrimRight(c.target, "/")
	return c, nil
}

// benchReport is what a workload prints: a table and a JSON value.
type benchReport interface {
	table(w io.Writer)
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseBenchConfig(args, stderr)
	if err != nil {
		return err
	}
	// The load tool usually shares the machine it measures: collecting its
	// garbage less often leaves more CPU to the server. GOGC, when set, wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("create CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	cl := newBenchClient(cfg.target, cfg.conns)
	defer cl.close()
	var rep benchReport
	switch cfg.workload {
	case "w1":
		rep, err = runW1(ctx, cl, cfg)
	case "w2":
		rep, err = runW2(ctx, cl, cfg)
	case "w3":
		rep, err = runW3(ctx, cl, cfg)
	case "w4":
		rep, err = runW4(ctx, cl, cfg)
	case "w5":
		rep, err = runW5(ctx, cl, cfg)
	case "sfu":
		rep, err = runSFU(ctx, cl, cfg)
	case "rpc":
		rep, err = runRPC(ctx, cl, cfg)
	}
	if err != nil {
		return fmt.Errorf("bench %s: %w", cfg.workload, err)
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		return nil
	}
	rep.table(stdout)
	return nil
}

// benchClient holds the generated clients over h2c transports: one for
// set-up, and a pool of connections the users spread over.
type benchClient struct {
	tr     *http.Transport
	auth   parleyv1connect.AuthServiceClient
	msgs   parleyv1connect.MessagesServiceClient
	groups parleyv1connect.GroupsServiceClient
	calls  parleyv1connect.CallsServiceClient
	target string
	prefix string

	pool []*http.Transport
	// poolMsgs[i] and poolCalls[i] call over pool[i]; newUser hands them
	// out in turn.
	poolMsgs  []parleyv1connect.MessagesServiceClient
	poolCalls []parleyv1connect.CallsServiceClient
	next      atomic.Uint64
}

func newBenchClient(target string, conns int) *benchClient {
	c := &benchClient{target: target, prefix: fmt.Sprintf("bn%08x", rand.Uint32())}
	c.tr = h2cTransport()
	hc := &http.Client{Transport: c.tr}
	c.auth = parleyv1connect.NewAuthServiceClient(hc, target, connect.WithGRPC())
	c.msgs = parleyv1connect.NewMessagesServiceClient(hc, target, connect.WithGRPC())
	c.groups = parleyv1connect.NewGroupsServiceClient(hc, target, connect.WithGRPC())
	c.calls = parleyv1connect.NewCallsServiceClient(hc, target, connect.WithGRPC())
	for range conns {
		// One connection per transport: an HTTP/2 transport multiplexes
		// every call to a host over one connection while it can.
		tr := h2cTransport()
		c.pool = append(c.pool, tr)
		c.poolMsgs = append(c.poolMsgs, parleyv1connect.NewMessagesServiceClient(&http.Client{Transport: tr}, target, connect.WithGRPC()))
		c.poolCalls = append(c.poolCalls, parleyv1connect.NewCallsServiceClient(&http.Client{Transport: tr}, target, connect.WithGRPC()))
	}
	return c
}

func h2cTransport() *http.Transport {
	tr := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 64}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return tr
}

func (c *benchClient) close() {
	c.tr.CloseIdleConnections()
	for _, tr := range c.pool {
		tr.CloseIdleConnections()
	}
}

// benchUser is a registered, logged-in user.
type benchUser struct {
	id    string
	name  string
	token string
	// msgs and calls use the user's connection, as a device has its own.
	msgs  parleyv1connect.MessagesServiceClient
	calls parleyv1connect.CallsServiceClient
}

// authed returns a context whose calls carry the user's access token. Each
// call needs its own, since connect records the response in it.
func (u benchUser) authed(ctx context.Context) context.Context {
	ctx, info := connect.NewClientContext(ctx)
	info.RequestHeader().Set("Authorization", "Bearer "+u.token)
	return ctx
}

// newUsers registers and logs in n users named prefix_role<i> and lets
// anyone message them.
func (c *benchClient) newUsers(ctx context.Context, role string, n, concurrency int) ([]benchUser, error) {
	users := make([]benchUser, n)
	err := forEach(n, concurrency, func(i int) error {
		u, err := c.newUser(ctx, fmt.Sprintf("%s_%s%d", c.prefix, role, i))
		users[i] = u
		return err
	})
	return users, err
}

func (c *benchClient) newUser(ctx context.Context, name string) (benchUser, error) {
	const password = "bench-password"
	reg, err := c.auth.Register(ctx, &parleyv1.RegisterRequest{Username: name, Password: password, DisplayName: name})
	if err != nil {
		return benchUser{}, limitError("register "+name, err)
	}
	login, err := c.auth.Login(ctx, &parleyv1.LoginRequest{Username: name, Password: password, DeviceName: "parley bench", Platform: parleyv1.Platform_PLATFORM_CLI})
	if err != nil {
		return benchUser{}, limitError("log in "+name, err)
	}
	conn := c.next.Add(1) % uint64(len(c.poolMsgs))
	u := benchUser{
		id: reg.GetUser().GetId(), name: name, token: login.GetTokens().GetAccessToken(),
		msgs: c.poolMsgs[conn], calls: c.poolCalls[conn],
	}
	if _, err := c.auth.UpdatePrivacy(u.authed(ctx), &parleyv1.UpdatePrivacyRequest{MessagePrivacy: parleyv1.MessagePrivacy_MESSAGE_PRIVACY_EVERYONE}); err != nil {
		return benchUser{}, fmt.Errorf("update privacy of %s: %w", name, err)
	}
	return u, nil
}

// limitError wraps err, naming the environment that turns limits off when
// the server refused for a limit.
func limitError(what string, err error) error {
	if connect.CodeOf(err) == connect.CodeResourceExhausted {
		return fmt.Errorf("%s: %w (%s)", what, err, limitsHint)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// directConversation creates (or finds) the conversation between from and to.
func (c *benchClient) directConversation(ctx context.Context, from, to benchUser) (string, error) {
	res, err := from.msgs.CreateDirectConversation(from.authed(ctx), &parleyv1.CreateDirectConversationRequest{UserId: to.id})
	if err != nil {
		return "", fmt.Errorf("create conversation %s→%s: %w", from.name, to.name, err)
	}
	return res.GetConversation().GetId(), nil
}

// send sends one text message into a conversation and returns its seq.
func (c *benchClient) send(ctx context.Context, from benchUser, convID, clientMsgID string) (int64, error) {
	res, err := from.msgs.Send(from.authed(ctx), &parleyv1.SendRequest{
		ClientMsgId: clientMsgID,
		Target:      &parleyv1.SendRequest_ConversationId{ConversationId: convID},
		Content:     &parleyv1.SendRequest_Text{Text: &parleyv1.TextContent{Body: "bench " + clientMsgID}},
	})
	if err != nil {
		return 0, limitError("send", err)
	}
	return res.GetSeq(), nil
}

// forEach runs fn(0..n-1) with at most concurrency calls at once and
// returns the first error.
func forEach(n, concurrency int, fn func(i int) error) error {
	sem := make(chan struct{}, concurrency)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
