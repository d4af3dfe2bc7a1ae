package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/parley-chat/parley/storage"
)

// bodyDeadlines bounds how long a request's body may take to arrive, so that
// a client that sends headers and then nothing, or a byte at a time, cannot
// hold a goroutine and a connection for as long as it likes (slowloris).
// net/http offers no such bound that spares streams: Server.ReadTimeout
// covers a whole HTTP/1.1 connection and would cut every long-lived stream,
// so each request gets its own read deadline through
// http.ResponseController, which HTTP/1.1 applies to the connection and
// HTTP/2 to the stream alone (its body is failed, the connection lives on).
//
// Three rules, by what the body is:
//   - One message (every Parley RPC, unary or server-streaming, and any
//     other route): the whole body within limit of the handler starting.
//     The deadline is lifted when the body ends, so the response stream
//     that follows is not cut: HTTP/1.1 watches the connection for the
//     client going away once the body is read, and a deadline left behind
//     would end the stream.
//   - An upload to the local store (PUT under storage.LocalPrefix), which
//     may be hundreds of MiB from a phone: the body must keep up minRate
//     bytes per second on average. Its deadline starts at limit and moves
//     one second later for every minRate bytes received, as Apache's
//     mod_reqtimeout does (body=limit,MinRate=minRate): a stall is cut
//     after limit, a dribble once it falls behind, and an upload of n bytes
//     takes at most limit + n/minRate.
//   - A stream of messages from the client (procedures that stream
//     requests, such as gRPC reflection): each read must bring bytes
//     within limit of the last.
//
// A request without a body is left alone; a zero limit or minRate turns
// its rules off. Requests cut off fail their
// read with os.ErrDeadlineExceeded, which Connect reports as
// DeadlineExceeded.
type bodyDeadlines struct {
	limit   time.Duration
	minRate int64
	// streaming are the paths (/package.Service/Method) of procedures whose
	// request body is a stream of messages.
	streaming map[string]bool
}

// clientStreamingPaths returns the paths of the procedures of services that
// stream requests, from the registered descriptors, so that a new
// procedure falls under the right rule without a list to keep up.
// Services whose descriptors are not registered are skipped: their
// requests fall under the one-message rule, the stricter one.
func clientStreamingPaths(services []string) map[string]bool {
	paths := make(map[string]bool)
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		methods := sd.Methods()
		for i := range methods.Len() {
			if m := methods.Get(i); m.IsStreamingClient() {
				paths["/"+name+"/"+string(m.Name())] = true
			}
		}
	}
	return paths
}

// wrap returns h with the deadlines applied. It must see the
// http.ResponseWriter of net/http itself (or one that unwraps to it), so
// it goes outside every other middleware.
func (d bodyDeadlines) wrap(h http.Handler) http.Handler {
	if d.limit <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		b := &deadlineBody{
			ReadCloser: r.Body,
			rc:         http.NewResponseController(w),
			start:      time.Now(),
			limit:      d.limit,
		}
		switch {
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, storage.LocalPrefix):
			if d.minRate <= 0 {
				h.ServeHTTP(w, r)
				return
			}
			b.minRate = d.minRate
		case d.streaming[r.URL.Path]:
			b.idle = true
		}
		if err := b.rc.SetReadDeadline(b.start.Add(d.limit)); err != nil {
			// Only a ResponseWriter that hides net/http's own refuses; there is
			// no other way to interrupt a blocked read, so serve unbounded.
			h.ServeHTTP(w, r)
			return
		}
		// A copy, as http.MaxBytesHandler does: net/http's HTTP/1.1 server
		// looks at its own request's body after the handler to decide
		// whether the connection can carry another request, and must find
		// it unread, not behind this wrapper.
		r2 := *r
		r2.Body = b
		h.ServeHTTP(w, &r2)
	})
}

// deadlineBody is a request body under a read deadline, which it moves as
// its rule says and lifts at the end of the body.
type deadlineBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	start    time.Time
	limit    time.Duration
	minRate  int64 // > 0: the upload rule
	idle     bool  // the rule of streamed requests
	received int64
	done     bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.received += int64(n)
	switch {
	case b.done:
	case err == io.EOF:
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.done = true
		return n, connect.NewError(connect.CodeDeadlineExceeded, bodyTimeoutError{b.rule()})
	case n > 0 && b.minRate > 0:
		// In floating point: received × 1 s would overflow a Duration past 9 GB.
		earned := time.Duration(float64(b.received) / float64(b.minRate) * float64(time.Second))
		_ = b.rc.SetReadDeadline(b.start.Add(b.limit + earned))
	case n > 0 && b.idle:
		_ = b.rc.SetReadDeadline(time.Now().Add(b.limit))
	}
	return n, err
}

func (b *deadlineBody) rule() string {
	switch {
	case b.minRate > 0:
		return fmt.Sprintf("request body arrived slower than %d bytes/s", b.minRate)
	case b.idle:
		return fmt.Sprintf("request stream sent nothing for %v", b.limit)
	default:
		return fmt.Sprintf("request body took longer than %v", b.limit)
	}
}

// bodyTimeoutError says which rule cut a body off. It is os.ErrDeadlineExceeded
// for handlers that test for it, without the connection's addresses that
// the error of the read carries. It is not in the error table: it fails the
// read of the request, before any interceptor runs.
type bodyTimeoutError struct{ msg string }

func (e bodyTimeoutError) Error() string        { return e.msg }
func (e bodyTimeoutError) Is(target error) bool { return target == os.ErrDeadlineExceeded }
