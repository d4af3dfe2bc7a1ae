package server

import (
	"bytes"
	"context"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/db"
	"github.com/parley-chat/parley/storage"
)

// gradient is a w×h picture of model's colors that compresses well, as an
// attacker's small file of large dimensions does.
func gradient(w, h int, model string) image.Image {
	r := image.Rect(0, 0, w, h)
	switch model {
	case "gray":
		m := image.NewGray(r)
		for y := range h {
			for x := range w {
				m.SetGray(x, y, color.Gray{uint8(x + y)})
			}
		}
		return m
	case "gray16":
		m := image.NewGray16(r)
		for y := range h {
			for x := range w {
				m.SetGray16(x, y, color.Gray16{uint16(x*y + x)})
			}
		}
		return m
	case "rgba64":
		m := image.NewRGBA64(r)
		for y := range h {
			for x := range w {
				m.SetRGBA64(x, y, color.RGBA64{uint16(x * 7), uint16(y * 5), uint16(x + y), 0xFFFF})
			}
		}
		return m
	case "nrgba64":
		m := image.NewNRGBA64(r)
		for y := range h {
			for x := range w {
				m.SetNRGBA64(x, y, color.NRGBA64{uint16(x * 7), uint16(y * 5), uint16(x + y), uint16(x)})
			}
		}
		return m
	case "paletted":
		m := image.NewPaletted(r, palette.Plan9)
		for y := range h {
			for x := range w {
				m.SetColorIndex(x, y, uint8(x^y))
			}
		}
		return m
	case "nrgba":
		m := image.NewNRGBA(r)
		for y := range h {
			for x := range w {
				m.SetNRGBA(x, y, color.NRGBA{uint8(x), uint8(y), uint8(x + y), uint8(x * y)})
			}
		}
		return m
	}
	m := image.NewRGBA(r)
	for y := range h {
		for x := range w {
			m.SetRGBA(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	return m
}

// manyFrames is a GIF of n frames of w×h.
func manyFrames(t testing.TB, w, h, n int) []byte {
	frame := gradient(w, h, "paletted").(*image.Paletted)
	g := &gif.GIF{}
	for range n {
		g.Image = append(g.Image, frame)
		g.Delay = append(g.Delay, 1)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encoded(t testing.TB, img image.Image, format string) []byte {
	var b bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&b, img)
	case "jpeg":
		err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	case "gif":
		err = gif.Encode(&b, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// costCases are images of every format, model and layout the decoders treat
// apart, with files made by other encoders in testdata/images (progressive,
// 4:4:4, CMYK and RGB JPEGs, interlaced PNGs, WebP of each kind).
func costCases(t testing.TB) map[string][]byte {
	cases := map[string][]byte{
		"PNG RGBA":                encoded(t, gradient(1500, 1000, "rgba"), "png"),
		"PNG NRGBA":               encoded(t, gradient(1000, 1500, "nrgba"), "png"),
		"PNG gray":                encoded(t, gradient(1200, 900, "gray"), "png"),
		"PNG gray16":              encoded(t, gradient(900, 1200, "gray16"), "png"),
		"PNG RGBA64":              encoded(t, gradient(800, 800, "rgba64"), "png"),
		"PNG NRGBA64":             encoded(t, gradient(800, 600, "nrgba64"), "png"),
		"PNG paletted":            encoded(t, gradient(2000, 1000, "paletted"), "png"),
		"JPEG 4:2:0":              encoded(t, gradient(1600, 1200, "rgba"), "jpeg"),
		"JPEG gray":               encoded(t, gradient(1200, 1600, "gray"), "jpeg"),
		"GIF":                     encoded(t, gradient(1500, 1500, "paletted"), "gif"),
		"GIF of 200 frames":       manyFrames(t, 800, 600, 200),
		"JPEG of 12 megapixels":   encoded(t, gradient(4000, 3000, "rgba"), "jpeg"),
		"PNG, tall and narrow":    encoded(t, gradient(600, 6000, "paletted"), "png"),
		"PNG gray, transparent":   grayWithTransparency(t, 1000, 1000, 8),
		"PNG gray16, transparent": grayWithTransparency(t, 700, 700, 16),
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "images", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cases[filepath.Base(f)] = b
	}
	return cases
}

// grayWithTransparency is a grayscale PNG with a tRNS chunk, which
// DecodeConfig reports as gray and image/png decodes as NRGBA(64).
func grayWithTransparency(t testing.TB, w, h, depth int) []byte {
	model := "gray"
	if depth == 16 {
		model = "gray16"
	}
	b := encoded(t, gradient(w, h, model), "png")
	// tRNS goes right after IHDR (8 + 25 bytes): a gray value to treat as
	// transparent, with its CRC.
	trns := []byte{0, 0, 0, 2, 't', 'R', 'N', 'S', 0, 7}
	trns = append(trns, crcOf(trns[4:])...)
	return append(append(append([]byte{}, b[:33]...), trns...), b[33:]...)
}

// TestDecodeCostBoundsWhatDecodingAllocates decodes and thumbnails images of
// every kind and checks that decodeCost, which the decode budget is charged,
// is at least what the work allocated.
func TestDecodeCostBoundsWhatDecodingAllocates(t *testing.T) {
	for name, b := range costCases(t) {
		t.Run(name, func(t *testing.T) {
			cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("DecodeConfig: %v", err)
			}
			head := b[:min(len(b), imageHeadLen)]
			if format == "webp" && webpAnimated(head) {
				t.Skip("animated WebP is not decoded")
			}
			cost := decodeCost(format, cfg, head, int64(len(b)))
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			img, err := decodeImage(bytes.NewReader(b), cfg)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if _, err := makeThumbnail(img, 6); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			used := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("%s %dx%d %T: allocated %d, estimated %d", format, cfg.Width, cfg.Height, img, used, cost)
			if used > cost {
				t.Errorf("decoding allocated %d bytes, more than the %d estimated", used, cost)
			}
		})
	}
}

// crcOf is a PNG chunk's CRC of its type and data, big-endian.
func crcOf(b []byte) []byte {
	c := crc32.ChecksumIEEE(b)
	return []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}
}

// openCounter is a store that counts the objects open at once, each
// weighing what decoding it costs.
type openCounter struct {
	storage.Store
	cost      int64
	mu        sync.Mutex
	open      int64
	peak      int64
	maxAtOnce int
	atOnce    int
	two       chan struct{} // closed when two are open at once
}

func (o *openCounter) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	r, err := o.Store.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.open += o.cost
	o.atOnce++
	o.peak, o.maxAtOnce = max(o.peak, o.open), max(o.maxAtOnce, o.atOnce)
	if o.atOnce == 2 && o.two != nil {
		close(o.two)
		o.two = nil
	}
	two := o.two
	o.mu.Unlock()
	if two != nil {
		// The first decode waits for a second one to start, so that the
		// budget is seen to admit two; a third would start meanwhile if
		// the budget did not hold it back.
		select {
		case <-two:
		case <-time.After(10 * time.Second):
		}
	}
	return closer{r, func() {
		o.mu.Lock()
		o.open -= o.cost
		o.atOnce--
		o.mu.Unlock()
	}}, nil
}

type closer struct {
	io.ReadCloser
	done func()
}

func (c closer) Close() error { c.done(); return c.ReadCloser.Close() }

// TestDecodeBudgetIsSharedByConcurrentUploads makes thumbnails of eight
// images at once under a budget that fits two: never more than the budget
// is being decoded, and all eight get their thumbnail. An image that needs
// more than the whole budget, or that waits past DecodeWait, gets none.
func TestDecodeBudgetIsSharedByConcurrentUploads(t *testing.T) {
	local, err := storage.NewLocal(t.TempDir(), bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	b := encoded(t, gradient(1200, 900, "rgba"), "png")
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	cost := decodeCost(format, cfg, b, int64(len(b)))
	store := &openCounter{Store: local, cost: cost, two: make(chan struct{})}
	mc := DefaultMediaConfig()
	mc.DecodeBudget = cost * 5 / 2
	mc.DecodeWait = time.Minute
	s := newMediaService(nil, store, mc, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	m := db.Medium{ID: "m", SizeBytes: int64(len(b)), StorageKey: storage.NewKey("media")}
	if err := local.Put(ctx, m.StorageKey, bytes.NewReader(b), int64(len(b)), "image/png"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	thumbs := make([]*thumbnail, 8)
	for i := range thumbs {
		wg.Go(func() {
			th, err := s.thumbnail(ctx, m, format, cfg, b, 1)
			if err != nil {
				t.Errorf("thumbnail: %v", err)
			}
			thumbs[i] = th
		})
	}
	wg.Wait()
	for i, th := range thumbs {
		if th == nil {
			t.Errorf("image %d got no thumbnail", i)
		}
	}
	if store.peak > mc.DecodeBudget {
		t.Errorf("decoded %d bytes' worth at once, over the budget of %d", store.peak, mc.DecodeBudget)
	}
	if store.maxAtOnce != 2 {
		t.Errorf("decoded %d images at once, want the 2 the budget fits", store.maxAtOnce)
	}

	s.cfg.DecodeBudget = cost - 1
	if th, err := s.thumbnail(ctx, m, format, cfg, b, 1); th != nil || err != nil {
		t.Errorf("an image over the whole budget: got thumbnail %v, %v; want none", th != nil, err)
	}

	s.cfg.DecodeBudget, s.cfg.DecodeWait = cost*5/2, 50*time.Millisecond
	if err := s.decode.Acquire(ctx, cost*2); err != nil {
		t.Fatal(err)
	}
	defer s.decode.Release(cost * 2)
	if th, err := s.thumbnail(ctx, m, format, cfg, b, 1); th != nil || err != nil {
		t.Errorf("an image waiting past DecodeWait: got thumbnail %v, %v; want none", th != nil, err)
	}
}
