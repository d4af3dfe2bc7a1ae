package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/storage"
)

// sweepBatch is how many expired uploads one sweep transaction deletes.
const sweepBatch = 100

// mediaSweeper deletes uploads that were not completed in time: their
// objects first, then their rows, so that a crash in between leaves rows
// the next sweep finds again, never objects nothing points to. It also
// deletes a completed media's upload key once its URL has expired: the local
// store keeps the sealed upload there, and on S3 a client may have written
// it again after CompleteUpload copied the checked bytes away. A media whose
// completion was claimed and never finished (its node died) goes as a
// pending one does.
// Nodes sweep side by side: each claims rows the others have not locked.
type mediaSweeper struct {
	db     *db.DB
	store  storage.Store
	logger *slog.Logger
	stop   chan struct{}
	done   chan struct{}
}

// newMediaSweeper starts sweeping every interval until Close.
func newMediaSweeper(d *db.DB, store storage.Store, every time.Duration, logger *slog.Logger) *mediaSweeper {
	s := &mediaSweeper{db: d, store: store, logger: logger.With("component", "media_sweeper"), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run(every)
	return s
}

// Close stops the sweeper and waits for a sweep under way.
func (s *mediaSweeper) Close() {
	close(s.stop)
	<-s.done
}

func (s *mediaSweeper) run(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every+time.Minute)
		n, err := s.sweep(ctx, time.Now())
		cancel()
		if err != nil {
			s.logger.Error("sweep expired uploads", "error", err)
		} else if n > 0 {
			s.logger.Info("swept expired uploads", "count", n)
		}
	}
}

// sweep deletes the uploads that expired before now and returns how many
// rows it handled.
func (s *mediaSweeper) sweep(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		var n int
		err := s.db.Tx(ctx, func(q *db.Queries) error {
			rows, err := q.ClaimExpiredUploads(ctx, db.ClaimExpiredUploadsParams{Now: now, MaxRows: sweepBatch})
			if err != nil {
				return fmt.Errorf("claim expired uploads: %w", err)
			}
			var pending, ready []string
			for _, r := range rows {
				if err := s.store.Delete(ctx, r.UploadKey); err != nil {
					return err
				}
				if r.State == mediaReady {
					ready = append(ready, r.ID)
					continue
				}
				if err := s.store.Delete(ctx, r.StorageKey); err != nil {
					return err
				}
				pending = append(pending, r.ID)
			}
			n = len(rows)
			if err := q.DeleteMedia(ctx, pending); err != nil {
				return fmt.Errorf("delete expired uploads: %w", err)
			}
			if err := q.ForgetUploadKeys(ctx, ready); err != nil {
				return fmt.Errorf("forget spent upload keys: %w", err)
			}
			return nil
		})
		total += n
		if err != nil || n < sweepBatch {
			return total, err
		}
	}
}
