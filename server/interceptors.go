package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// errorInterceptor applies the error table (toConnectError) to every unary
// and streaming handler.
type errorInterceptor struct {
	logger *slog.Logger
}

func (i errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			return nil, toConnectError(ctx, i.logger, req.Spec().Procedure, err)
		}
		return res, nil
	}
}

func (i errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return toConnectError(ctx, i.logger, conn.Spec().Procedure, next(ctx, conn))
	}
}

// metrics are the per-procedure RPC counters and latencies served at /metrics.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// batchSize and batchTime describe Send's group commits: how many
	// messages each transaction carried and how long it took.
	batchSize prometheus.Histogram
	batchTime prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_rpc_requests_total",
			Help: "RPCs handled, by procedure and Connect code.",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_rpc_duration_seconds",
			Help:    "RPC handling time, by procedure (for streams: the stream's lifetime).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60, 600},
		}, []string{"procedure"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_append_batch_messages",
			Help:    "Messages per Send transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "parley_append_batch_seconds",
			Help:    "Duration of a Send transaction (group commit), commit included.",
			Buckets: []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, 1},
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.batchSize, m.batchTime} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observeInterceptor logs every RPC once (procedure, code, duration) and
// records its metrics. It never logs request or response bodies, so passwords
// and tokens cannot reach the log.
type observeInterceptor struct {
	logger  *slog.Logger
	metrics *metrics
}

func (i observeInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		i.record(ctx, req.Spec().Procedure, req.Peer().Addr, start, err)
		return res, err
	}
}

func (i observeInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i observeInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.record(ctx, conn.Spec().Procedure, conn.Peer().Addr, start, err)
		return err
	}
}

func (i observeInterceptor) record(ctx context.Context, procedure, peer string, start time.Time, err error) {
	elapsed := time.Since(start)
	code := "ok"
	level := slog.LevelInfo
	if err != nil {
		code = connect.CodeOf(err).String()
		if connect.CodeOf(err) == connect.CodeInternal || connect.CodeOf(err) == connect.CodeUnknown {
			level = slog.LevelError
		}
	}
	i.metrics.requests.WithLabelValues(procedure, code).Inc()
	i.metrics.duration.WithLabelValues(procedure).Observe(elapsed.Seconds())
	attrs := []slog.Attr{
		slog.String("procedure", procedure),
		slog.String("code", code),
		slog.Duration("duration", elapsed),
		slog.String("peer", peer),
	}
	if c, ok := callerFrom(ctx); ok {
		attrs = append(attrs, slog.String("user_id", c.UserID))
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) && code != "ok" {
		attrs = append(attrs, slog.String("error", cerr.Message()))
	}
	i.logger.LogAttrs(ctx, level, "rpc", attrs...)
}
