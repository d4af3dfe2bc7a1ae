package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// envelope is what crosses nodes: one hub call, addressed by user.
type envelope struct {
	Node      string   `json:"n"`
	Users     []string `json:"u"`
	Skip      string   `json:"s,omitempty"`
	EndUser   string   `json:"eu,omitempty"` // with Sessions: end these sessions' streams
	Sessions  []string `json:"es,omitempty"`
	EventWire []byte   `json:"e,omitempty"` // an encoded parleyv1.SubscribeResponse
	CallWire  []byte   `json:"c,omitempty"` // an encoded parleyv1.Call that changed
}

// relay carries hub calls between nodes through Redis pub/sub (rueidis,
// standalone or Cluster). Redis is a doorbell: an envelope lost while Redis
// is away costs latency, because streams read positions from PostgreSQL at
// every heartbeat and fetch what they missed, never data.
type relay struct {
	client  rueidis.Client
	channel string
	node    string
	hub     *hub
	logger  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	failed time.Time            // when publishing last failed, for log throttling
	calls  func(*parleyv1.Call) // gets the calls that changed on other nodes
}

// onCall has fn called with every call that changes on another node, for
// the node hosting its media room.
func (r *relay) onCall(fn func(*parleyv1.Call)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = fn
}

// sendCall tells the other nodes that a call changed.
func (r *relay) sendCall(call *parleyv1.Call) {
	wire, err := proto.Marshal(call)
	if err != nil {
		r.logger.Error("encode call", "error", err)
		return
	}
	r.send(envelope{CallWire: wire})
}

func newRelay(url, channel string, h *hub, logger *slog.Logger) (*relay, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis: %w", err)
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{
		client: client, channel: channel, node: hex.EncodeToString(id), hub: h,
		logger: logger.With("component", "relay"), cancel: cancel, done: make(chan struct{}),
	}
	subscribed := make(chan struct{})
	go r.receive(ctx, subscribed)
	select {
	case <-subscribed:
	case <-time.After(5 * time.Second):
		r.Close()
		return nil, fmt.Errorf("subscribe to redis channel %s: timed out", channel)
	}
	return r, nil
}

// receive delivers other nodes' envelopes locally, resubscribing after any
// failure until Close.
func (r *relay) receive(ctx context.Context, subscribed chan struct{}) {
	defer close(r.done)
	var once sync.Once
	for ctx.Err() == nil {
		cmd := r.client.B().Subscribe().Channel(r.channel).Build()
		err := r.client.Receive(rueidis.WithOnSubscriptionHook(ctx, func(rueidis.PubSubSubscription) {
			once.Do(func() { close(subscribed) })
		}), cmd, func(msg rueidis.PubSubMessage) { r.deliver([]byte(msg.Message)) })
		if ctx.Err() != nil {
			return
		}
		r.logger.Warn("redis subscription lost; retrying", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *relay) deliver(raw []byte) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		r.logger.Warn("dropping malformed envelope", "error", err)
		return
	}
	if env.Node == r.node {
		return // delivered locally when published
	}
	if len(env.CallWire) > 0 {
		call := &parleyv1.Call{}
		if err := proto.Unmarshal(env.CallWire, call); err != nil {
			r.logger.Warn("dropping malformed call", "error", err)
			return
		}
		r.mu.Lock()
		fn := r.calls
		r.mu.Unlock()
		if fn != nil {
			fn(call)
		}
		return
	}
	if len(env.Sessions) > 0 {
		r.hub.endLocal(env.EndUser, env.Sessions...)
		return
	}
	ev := &parleyv1.SubscribeResponse{}
	if err := proto.Unmarshal(env.EventWire, ev); err != nil {
		r.logger.Warn("dropping malformed event", "error", err)
		return
	}
	r.hub.deliver(env.Users, env.Skip, ev)
}

// send publishes envelopes to the other nodes, pipelined in one round trip.
// It never fails the caller: what was committed is durable, and other nodes
// catch up from PostgreSQL.
func (r *relay) send(envs ...envelope) {
	cmds := make(rueidis.Commands, 0, len(envs))
	for _, env := range envs {
		env.Node = r.node
		raw, err := json.Marshal(env)
		if err != nil {
			r.logger.Error("encode envelope", "error", err)
			continue
		}
		cmds = append(cmds, r.client.B().Publish().Channel(r.channel).Message(string(raw)).Build())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, res := range r.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			r.mu.Lock()
			quiet := time.Since(r.failed) < 10*time.Second
			r.failed = time.Now()
			r.mu.Unlock()
			if !quiet {
				r.logger.Warn("redis publish failed; other nodes will catch up from PostgreSQL", "error", err)
			}
			return
		}
	}
}

func (r *relay) ping(ctx context.Context) error {
	return r.client.Do(ctx, r.client.B().Ping().Build()).Error()
}

// Close stops receiving and closes the client.
func (r *relay) Close() {
	r.cancel()
	r.client.Close()
	<-r.done
}
