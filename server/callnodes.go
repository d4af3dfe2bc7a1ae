package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/rueidis"

	"github.com/parley-chat/parley/gen/go/parley/v1/parleyv1connect"
)

// forwardedHeader marks a call signaling request one node passed to the node
// that hosts the call's room. A forwarded request is never forwarded again,
// so two nodes that disagree about a room cannot bounce a request between
// them.
const forwardedHeader = "Parley-Forwarded"

// Lua scripts that touch a lease only while this node holds it, so that a
// node whose lease expired never renews or deletes another node's.
var (
	renewLease = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	dropLease  = rueidis.NewLuaScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

// callNodes pins each call's SFU room to one node. The node that creates a
// call's room claims it in Redis (SET NX with a lease, under
// CallNodeKey) and renews the lease while the room lives; any other node that
// gets signaling for the call passes it to that node's advertised URL. When
// the owner dies its lease runs out and the next node asked claims the room
// anew. Without Redis every room is local.
type callNodes struct {
	redis rueidis.Client // nil: one node
	self  string         // this node's URL, as the others reach it
	lease time.Duration
	http  *http.Client

	mu      sync.Mutex
	owned   map[string]time.Time                          // calls whose lease this node holds, with when it claimed them
	clients map[string]parleyv1connect.CallsServiceClient // by node URL
}

// CallNodeKey is the Redis key that names the node hosting a call's room.
func CallNodeKey(callID string) string { return "parley:call:{" + callID + "}:node" }

func newCallNodes(redis rueidis.Client, self string, lease time.Duration, client *http.Client) *callNodes {
	if client == nil {
		client = nodeClient(self)
	}
	return &callNodes{
		redis: redis, self: strings.TrimSuffix(self, "/"), lease: lease, http: client,
		owned: make(map[string]time.Time), clients: make(map[string]parleyv1connect.CallsServiceClient),
	}
}

// nodeClient is the HTTP client for calls between nodes: HTTP/2 over TLS
// for https URLs, HTTP/2 without TLS (h2c, which `parley serve` speaks) for
// http ones.
func nodeClient(self string) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute}
	if strings.HasPrefix(self, "https://") {
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetHTTP1(true)
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: tr}
}

// clustered reports whether rooms may live on other nodes.
func (n *callNodes) clustered() bool { return n.redis != nil }

// owner returns the URL of the node hosting callID's room, or "" when it is
// (or, with claim, now is) this node. Without claim a room nobody hosts is
// reported as this node's: the caller then finds no room.
func (n *callNodes) owner(ctx context.Context, callID string, claim bool) (string, error) {
	if !n.clustered() {
		return "", nil
	}
	key := CallNodeKey(callID)
	for range 3 {
		url, err := n.redis.Do(ctx, n.redis.B().Get().Key(key).Build()).ToString()
		switch {
		case rueidis.IsRedisNil(err):
			url = ""
		case err != nil:
			return "", fmt.Errorf("read the node of call %s: %w", callID, err)
		}
		if url == n.self {
			n.setOwned(callID, true)
			return "", nil
		}
		if url != "" {
			n.setOwned(callID, false)
			return url, nil
		}
		if !claim {
			return "", nil
		}
		err = n.redis.Do(ctx, n.redis.B().Set().Key(key).Value(n.self).Nx().PxMilliseconds(n.lease.Milliseconds()).Build()).Error()
		if err == nil {
			n.setOwned(callID, true)
			return "", nil
		}
		if !rueidis.IsRedisNil(err) {
			return "", fmt.Errorf("claim call %s: %w", callID, err)
		}
		// Another node claimed it meanwhile: read whose it is.
	}
	return "", fmt.Errorf("claim call %s: the lease keeps changing hands", callID)
}

func (n *callNodes) setOwned(callID string, owned bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if owned {
		if _, ok := n.owned[callID]; !ok {
			n.owned[callID] = time.Now()
		}
	} else {
		delete(n.owned, callID)
	}
}

// ownedCalls returns the calls whose lease this node holds.
func (n *callNodes) ownedCalls() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	ids := make([]string, 0, len(n.owned))
	for id := range n.owned {
		ids = append(ids, id)
	}
	return ids
}

// claimedBefore reports whether this node claimed callID before t.
func (n *callNodes) claimedBefore(callID string, t time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	at, ok := n.owned[callID]
	return ok && at.Before(t)
}

// renew extends this node's lease on callID; false when it no longer holds it.
func (n *callNodes) renew(ctx context.Context, callID string) (bool, error) {
	if !n.clustered() {
		return true, nil
	}
	got, err := renewLease.Exec(ctx, n.redis, []string{CallNodeKey(callID)}, []string{n.self, fmt.Sprint(n.lease.Milliseconds())}).AsInt64()
	if err != nil {
		return true, fmt.Errorf("renew the lease of call %s: %w", callID, err)
	}
	if got == 0 {
		n.setOwned(callID, false)
	}
	return got == 1, nil
}

// release gives up this node's lease on callID, if it holds it.
func (n *callNodes) release(ctx context.Context, callID string) error {
	n.mu.Lock()
	_, owned := n.owned[callID]
	delete(n.owned, callID)
	n.mu.Unlock()
	if !n.clustered() || !owned {
		return nil
	}
	if err := dropLease.Exec(ctx, n.redis, []string{CallNodeKey(callID)}, []string{n.self}).Error(); err != nil {
		return fmt.Errorf("release the lease of call %s: %w", callID, err)
	}
	return nil
}

// client returns a CallsService client for the node at url.
func (n *callNodes) client(url string) parleyv1connect.CallsServiceClient {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.clients[url]
	if !ok {
		c = parleyv1connect.NewCallsServiceClient(n.http, url)
		n.clients[url] = c
	}
	return c
}

// forwardContext returns a client context for passing the request in ctx to
// another node: with the caller's own Authorization header (every node
// verifies the same access tokens) and the forwarded mark.
func forwardContext(ctx context.Context) context.Context {
	out, info := connect.NewClientContext(ctx)
	if in, ok := connect.CallInfoForHandlerContext(ctx); ok {
		info.RequestHeader().Set("Authorization", in.RequestHeader().Get("Authorization"))
	}
	info.RequestHeader().Set(forwardedHeader, "1")
	return out
}

// forwarded reports whether the request in ctx came from another node.
func forwarded(ctx context.Context) bool {
	in, ok := connect.CallInfoForHandlerContext(ctx)
	return ok && in.RequestHeader().Get(forwardedHeader) != ""
}

// forwardError passes on what the owner answered; a node that cannot be
// reached is Unavailable, so the client retries (and, once the owner's lease
// ran out, lands on a node that hosts the room anew).
func forwardError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() == connect.CodeUnknown {
		return errCallNodeUnreachable
	}
	out := connect.NewError(ce.Code(), errors.New(ce.Message()))
	for _, d := range ce.Details() {
		out.AddDetail(d)
	}
	return out
}
