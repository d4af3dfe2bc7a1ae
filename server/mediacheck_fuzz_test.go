package server

import (
	"bytes"
	"image"
	"runtime"
	"testing"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// FuzzMediaSniff feeds the content checks arbitrary first bytes: sniffing
// reads only the first sniffLen bytes, names a bare media type, and a file
// declared as what its bytes sniff as is never refused.
func FuzzMediaSniff(f *testing.F) {
	for _, s := range []string{"ID3\x03", "\xFF\xFB\x90\x64", "\xFF\xF1\x50\x80", "#!AMR\n", "fLaC\x00", "\x00\x00\x00\x20ftypM4A ",
		"OggS\x00\x02", "\x1A\x45\xDF\xA3", "<!doctype html>", "<?xml version='1.0'?><svg>", "%PDF-1.7", "PK\x03\x04",
		"\x89PNG\r\n\x1a\n", "\xFF\xD8\xFF\xE0", "GIF89a", "RIFF\x00\x00\x00\x00WEBPVP8 ", "RIFF\x00\x00\x00\x00WAVEfmt "} {
		f.Add([]byte(s))
	}
	files := []string{"*"}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := sniff(b)
		if got != baseType(got) {
			t.Fatalf("sniff gave %q, not a bare media type", got)
		}
		if len(b) > sniffLen {
			if head := sniff(b[:sniffLen]); head != got {
				t.Fatalf("sniff gave %q for the whole input, %q for its first %d bytes", got, head, sniffLen)
			}
		}
		if err := checkContent(parleyv1.MediaKind_MEDIA_KIND_FILE, got, b, files); err != nil {
			t.Fatalf("a file declared as what it sniffs as (%s) was refused: %v", got, err)
		}
	})
}

// FuzzMediaImage runs arbitrary bytes through what CompleteUpload does with
// an image: the header, the decode cost, decoding within a budget and the
// thumbnail. Nothing panics; the cost is never negative; a decoded image has
// the size its header gave; and decoding allocates no more than the cost
// the budget is charged.
func FuzzMediaImage(f *testing.F) {
	for _, b := range costSeeds(f) {
		f.Add(b)
	}
	const budget = 64 << 20
	f.Fuzz(func(t *testing.T, b []byte) {
		head := b[:min(len(b), imageHeadLen)]
		o := jpegOrientation(head)
		if o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
		jpegFrameOf(head)
		cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
		if err != nil || cfg.Width <= 0 || cfg.Height <= 0 || "image/"+format != sniff(b[:min(len(b), sniffLen)]) {
			return // refused as undecodable
		}
		cost := decodeCost(format, cfg, head, int64(len(b)))
		if cost < 0 {
			t.Fatalf("decode cost %d for %s %dx%d", cost, format, cfg.Width, cfg.Height)
		}
		if cost > budget || format == "webp" && webpAnimated(head) {
			return // stored without a thumbnail
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		img, _, err := image.Decode(bytes.NewReader(b))
		if err != nil {
			return // refused as undecodable
		}
		if got := img.Bounds(); got.Dx() != cfg.Width || got.Dy() != cfg.Height {
			t.Fatalf("%s decoded %dx%d, its header said %dx%d", format, got.Dx(), got.Dy(), cfg.Width, cfg.Height)
		}
		if _, err := makeThumbnail(img, o); err != nil {
			t.Fatalf("thumbnail: %v", err)
		}
		runtime.ReadMemStats(&after)
		if used := int64(after.TotalAlloc - before.TotalAlloc); used > cost {
			t.Fatalf("%s %dx%d (%T): decoding allocated %d bytes, over its cost of %d", format, cfg.Width, cfg.Height, img, used, cost)
		}
	})
}

// costSeeds are small images of each format and layout, and the files in
// testdata/images.
func costSeeds(t testing.TB) [][]byte {
	out := [][]byte{
		encoded(t, gradient(64, 48, "rgba"), "png"),
		encoded(t, gradient(48, 64, "nrgba64"), "png"),
		encoded(t, gradient(40, 30, "paletted"), "png"),
		encoded(t, gradient(64, 48, "rgba"), "jpeg"),
		encoded(t, gradient(30, 40, "gray"), "jpeg"),
		encoded(t, gradient(64, 48, "paletted"), "gif"),
		manyFrames(t, 16, 16, 5),
		grayWithTransparency(t, 32, 32, 8),
	}
	return out
}
