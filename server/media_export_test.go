package server

import "context"

// SetMediaAfterCheck sets the seam CompleteUpload calls between checking an
// upload's bytes and making the media ready, for tests of the server_test
// package.
func SetMediaAfterCheck(c *Config, f func(ctx context.Context, mediaID string)) {
	c.Media.afterCheck = f
}
