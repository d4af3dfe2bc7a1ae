package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers the GIF decoder with image.Decode
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers the WebP decoder with image.Decode

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

// thumbnailSide is the longest side of a thumbnail the server makes.
const thumbnailSide = 320

// sniffLen is how much of a file the content checks read.
const sniffLen = 512

// baseType is a content type's media type, lower case, without parameters;
// empty when it does not parse.
func baseType(contentType string) string {
	t, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return strings.ToLower(t)
}

// sniff names the format of a file from its first bytes: what
// http.DetectContentType finds, plus the audio and container formats it
// leaves out (MP3 without ID3, AAC, AMR, FLAC, any ISO media file).
func sniff(head []byte) string {
	switch {
	case len(head) >= 12 && string(head[4:8]) == "ftyp":
		return "video/mp4" // ISO base media: MP4, M4A, MOV, 3GP
	case bytes.HasPrefix(head, []byte("#!AMR")):
		return "audio/amr"
	case bytes.HasPrefix(head, []byte("fLaC")):
		return "audio/flac"
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xF6 == 0xF0:
		return "audio/aac" // ADTS
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xE0 == 0xE0:
		return "audio/mpeg" // MPEG audio frame sync
	}
	t := baseType(http.DetectContentType(head))
	if t == "" {
		return "application/octet-stream"
	}
	return t
}

// agreeing lists, for each sniffed format, the declared types it may be.
var agreeing = map[string][]string{
	"image/png":       {"image/png", "image/apng"},
	"image/jpeg":      {"image/jpeg", "image/jpg", "image/pjpeg"},
	"image/gif":       {"image/gif"},
	"image/webp":      {"image/webp"},
	"image/bmp":       {"image/bmp"},
	"application/ogg": {"audio/ogg", "audio/opus", "video/ogg", "application/ogg"},
	"video/webm":      {"video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska"},
	"video/mp4":       {"video/mp4", "audio/mp4", "audio/m4a", "audio/x-m4a", "video/quicktime", "video/3gpp", "audio/3gpp", "audio/aac"},
	"audio/mpeg":      {"audio/mpeg", "audio/mp3"},
	"audio/aac":       {"audio/aac", "audio/aacp", "audio/x-aac"},
	"audio/amr":       {"audio/amr", "audio/amr-wb"},
	"audio/flac":      {"audio/flac", "audio/x-flac"},
	"audio/wave":      {"audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave"},
	"video/avi":       {"video/avi", "video/x-msvideo"},
	"text/html":       {"text/html"},
	"text/xml":        {"text/xml", "application/xml", "image/svg+xml"},
	"application/pdf": {"application/pdf"},
	"application/zip": {"application/zip"},
}

// recognisable are the declared types whose bytes sniff can confirm: a
// file declared as one of them must be one.
var recognisable = func() map[string]bool {
	m := map[string]bool{}
	for _, ts := range agreeing {
		for _, t := range ts {
			m[t] = true
		}
	}
	return m
}()

// Why an upload's content was refused.
var (
	errContentNotAllowed = errors.New("is not a format allowed for this kind of media")
	errContentMismatch   = errors.New("does not match the declared content type")
)

// checkContent checks a file's first bytes against its kind and declared
// type. Images, voice and video must sniff as a format allowed for their
// kind that agrees with the declared type. A file may be anything, but a
// declared type sniffing can recognise must be true, and content a browser
// would run as a page (HTML, XML) must be declared as such.
func checkContent(kind parleyv1.MediaKind, declared string, head []byte, allowed []string) error {
	got := sniff(head)
	want := baseType(declared)
	agrees := slices.Contains(agreeing[got], want)
	if kind == parleyv1.MediaKind_MEDIA_KIND_FILE {
		switch {
		case agrees:
			return nil
		case recognisable[want], got == "text/html", got == "text/xml":
			return fmt.Errorf("content (%s) %w %s", got, errContentMismatch, want)
		}
		return nil
	}
	if !agrees {
		return fmt.Errorf("content (%s) %w %s", got, errContentMismatch, want)
	}
	if !typeAllowed(want, allowed) {
		return fmt.Errorf("content (%s) %w", got, errContentNotAllowed)
	}
	return nil
}

// typeAllowed says whether a base type is on an allow-list; "*" allows all
// and "audio/*" a whole family.
func typeAllowed(t string, allowed []string) bool {
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "*" || a == t || strings.HasSuffix(a, "/*") && strings.HasPrefix(t, strings.TrimSuffix(a, "*")) {
			return true
		}
	}
	return false
}

// thumbnail is an encoded preview image.
type thumbnail struct {
	data          []byte
	contentType   string
	width, height int
}

// makeThumbnail scales an image so that its longest side is at most
// thumbnailSide pixels (it never enlarges), turns it as its EXIF orientation
// says, and encodes it as JPEG, or PNG when the image has transparency.
func makeThumbnail(src image.Image, orientation int) (thumbnail, error) {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	if w <= 0 || h <= 0 {
		return thumbnail{}, errors.New("empty image")
	}
	tw, th := thumbnailSize(w, h)
	if pw, ph := prescaleSize(w, h); pw != w {
		// CatmullRom's buffer grows with the source's height; a cheap
		// bilinear step to four times the thumbnail first keeps it small.
		mid := image.NewRGBA(image.Rect(0, 0, pw, ph))
		draw.ApproxBiLinear.Scale(mid, mid.Bounds(), src, b, draw.Src, nil)
		src, b = mid, mid.Bounds()
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	dst = orient(dst, orientation)
	var buf bytes.Buffer
	out := thumbnail{width: dst.Bounds().Dx(), height: dst.Bounds().Dy()}
	if dst.Opaque() {
		out.contentType = "image/jpeg"
		if err := jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 80}); err != nil {
			return thumbnail{}, fmt.Errorf("encode thumbnail: %w", err)
		}
	} else {
		out.contentType = "image/png"
		if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, dst); err != nil {
			return thumbnail{}, fmt.Errorf("encode thumbnail: %w", err)
		}
	}
	out.data = buf.Bytes()
	return out, nil
}

// jpegOrientation reads the EXIF orientation (1 to 8) of a JPEG, 1 when it
// has none: cameras store pictures as the sensor saw them and say in the tag
// how to turn them, which browsers and phones obey when showing the file.
func jpegOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 1
	}
	for i := 2; i+4 <= len(b) && b[i] == 0xFF; {
		marker := b[i+1]
		n := int(b[i+2])<<8 | int(b[i+3])
		if marker == 0xDA || n < 2 || i+2+n > len(b) {
			break // the image data starts, or the segment is cut short
		}
		if seg := b[i+4 : i+2+n]; marker == 0xE1 && bytes.HasPrefix(seg, []byte("Exif\x00\x00")) {
			return tiffOrientation(seg[6:])
		}
		i += 2 + n
	}
	return 1
}

// tiffOrientation finds tag 0x0112 in the first IFD of a TIFF header.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var u16 func([]byte) int
	var u32 func([]byte) int
	switch string(t[:4]) {
	case "II*\x00":
		u16 = func(p []byte) int { return int(p[0]) | int(p[1])<<8 }
		u32 = func(p []byte) int { return u16(p) | u16(p[2:])<<16 }
	case "MM\x00*":
		u16 = func(p []byte) int { return int(p[0])<<8 | int(p[1]) }
		u32 = func(p []byte) int { return u16(p)<<16 | u16(p[2:]) }
	default:
		return 1
	}
	ifd := u32(t[4:])
	if ifd < 8 || ifd+2 > len(t) {
		return 1
	}
	for k := range u16(t[ifd:]) {
		e := ifd + 2 + 12*k
		if e+12 > len(t) {
			break
		}
		if u16(t[e:]) == 0x0112 {
			if o := u16(t[e+8:]); o >= 1 && o <= 8 {
				return o
			}
			return 1
		}
	}
	return 1
}

// orient turns an image as its EXIF orientation o says it should be shown.
func orient(src *image.RGBA, o int) *image.RGBA {
	if o < 2 || o > 8 {
		return src
	}
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w // the orientations that turn by a quarter
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := range h {
		for x := range w {
			var dx, dy int
			switch o {
			case 2: // mirrored
				dx, dy = w-1-x, y
			case 3: // upside down
				dx, dy = w-1-x, h-1-y
			case 4: // mirrored upside down
				dx, dy = x, h-1-y
			case 5: // mirrored, then a quarter turn anticlockwise
				dx, dy = y, x
			case 6: // a quarter turn clockwise
				dx, dy = h-1-y, x
			case 7: // mirrored, then a quarter turn clockwise
				dx, dy = h-1-y, w-1-x
			case 8: // a quarter turn anticlockwise
				dx, dy = y, w-1-x
			}
			si, di := src.PixOffset(b.Min.X+x, b.Min.Y+y), dst.PixOffset(dx, dy)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}

// decodeOverhead is what decoding and making a thumbnail take besides the
// decoded image, its rows and the scaler's buffer: the decoders' readers
// and tables, the thumbnail itself, turned, and its encoder's (zlib's
// compressor is the largest, about a megabyte).
const decodeOverhead = 4 << 20

// decodeCost estimates, from the header image.DecodeConfig read and the
// file's first bytes, the most memory that decoding the image and scaling it
// to a thumbnail allocates: what the decoder in this binary allocates for
// that format, color model and bit depth, plus the scaler's buffer. It errs
// high where the header leaves the decoder's choice open.
func decodeCost(format string, cfg image.Config, head []byte, size int64) int64 {
	w, h := int64(cfg.Width), int64(cfg.Height)
	if w > 1<<24 || h > 1<<24 {
		return math.MaxInt64 // more than any budget, and no overflow below
	}
	px := w * h
	var decoded int64
	switch format {
	case "png":
		switch cfg.ColorModel {
		case color.Gray16Model, color.RGBA64Model, color.NRGBA64Model:
			decoded = 8 * px // 16-bit gray with a transparent color decodes as NRGBA64
		default:
			decoded = 4 * px // 8-bit gray with a transparent color decodes as NRGBA
			if _, ok := cfg.ColorModel.(color.Palette); ok {
				decoded = px
			}
		}
		if len(head) > 28 && head[28] == 1 {
			decoded += decoded / 2 // Adam7: each pass is decoded apart, then merged
		}
	case "jpeg":
		decoded = jpegDecodeCost(w, h, head)
	case "gif":
		decoded = px // the first frame only, paletted, within the logical screen
	case "webp":
		// A plain lossy file decodes as 4:2:0 YCbCr; lossless, alpha and
		// extended files go through NRGBA, with a copy for a color index.
		// The VP8 decoder holds the compressed frame too.
		decoded = 8*px + size
		if cfg.ColorModel == color.YCbCrModel && len(head) >= 16 && string(head[12:16]) == "VP8 " {
			decoded = (w+15)/16*16*((h+15)/16*16)*3/2 + size
		}
	default:
		decoded = 8 * px
	}
	rows := 2 * 8 * w // a decoder's current and previous row, at most
	return decoded + rows + scaleCost(cfg.Width, cfg.Height) + decodeOverhead
}

// webpAnimated says whether a WebP file's extended header (VP8X) marks it
// animated.
func webpAnimated(head []byte) bool {
	return len(head) > 20 && string(head[12:16]) == "VP8X" && head[20]&0x02 != 0
}

// scaleCost is what scaling a w×h picture to its thumbnail allocates: the
// prescaled copy, if any, and the buffer of draw.CatmullRom.Scale, four
// float64s for each pixel of the thumbnail's width times its source's
// height.
func scaleCost(w, h int) int64 {
	tw, _ := thumbnailSize(w, h)
	pw, ph := prescaleSize(w, h)
	if pw == w {
		return int64(tw) * int64(h) * 32
	}
	return int64(pw)*int64(ph)*4 + int64(tw)*int64(ph)*32
}

// prescaleSize is the size a w×h picture is first scaled to, bilinearly,
// when it is more than four times its thumbnail: four times its thumbnail.
// Otherwise it is w×h.
func prescaleSize(w, h int) (int, int) {
	if max(w, h) <= 4*thumbnailSide {
		return w, h
	}
	tw, th := thumbnailSize(w, h)
	return 4 * tw, 4 * th
}

// thumbnailSize is the size of the thumbnail of a w×h picture: its longest
// side at most thumbnailSide pixels, never enlarged.
func thumbnailSize(w, h int) (int, int) {
	if longest := max(w, h); longest > thumbnailSide {
		return max(1, (w*thumbnailSide+longest/2)/longest), max(1, (h*thumbnailSide+longest/2)/longest)
	}
	return w, h
}

// jpegDecodeCost follows image/jpeg's allocations for the frame header
// (SOF) found in head: the planes of each component padded to whole MCUs,
// 256 bytes per 8×8 block of each component kept across the scans of a
// progressive file, and the RGBA or CMYK copy made of an RGB or four-
// component file. Without a frame header in head it assumes the worst: a
// progressive four-component file.
func jpegDecodeCost(w, h int64, head []byte) int64 {
	f, ok := jpegFrameOf(head)
	if !ok || len(f.comps) == 0 {
		return 24 * w * h
	}
	hmax, vmax := int64(1), int64(1)
	for _, c := range f.comps {
		hmax, vmax = max(hmax, int64(c.h)), max(vmax, int64(c.v))
	}
	if len(f.comps) == 1 {
		hmax, vmax = 1, 1 // image/jpeg ignores a lone component's factors
	}
	mxx, myy := (w+8*hmax-1)/(8*hmax), (h+8*vmax-1)/(8*vmax)
	var planes, blocks int64
	for _, c := range f.comps {
		ch, cv := int64(c.h), int64(c.v)
		if len(f.comps) == 1 {
			ch, cv = 1, 1
		}
		planes += 64 * ch * mxx * cv * myy
		blocks += ch * mxx * cv * myy
	}
	cost := planes
	if f.progressive {
		cost += 256 * blocks
	}
	if len(f.comps) == 4 || len(f.comps) == 3 && f.rgb {
		cost += 4 * w * h
	}
	return cost
}

type jpegComp struct{ id, h, v byte }

// jpegFrame is what a JPEG's frame header and the markers before it say
// about how image/jpeg will decode it.
type jpegFrame struct {
	progressive bool
	comps       []jpegComp
	rgb         bool // decoded as RGB, not YCbCr: image/jpeg's isRGB
}

// jpegFrameOf walks the segments of a JPEG's first bytes to its frame
// header, as jpegOrientation does, noting the JFIF and Adobe markers that
// decide whether three components are RGB.
func jpegFrameOf(b []byte) (jpegFrame, bool) {
	var f jpegFrame
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return f, false
	}
	jfif, adobe, transform := false, false, byte(0)
	for i := 2; i+4 <= len(b) && b[i] == 0xFF; {
		marker := b[i+1]
		if marker == 0xFF {
			i++ // fill bytes may pad a marker
			continue
		}
		n := int(b[i+2])<<8 | int(b[i+3])
		if marker == 0xDA || n < 2 || i+2+n > len(b) {
			break
		}
		seg := b[i+4 : i+2+n]
		switch {
		case marker == 0xE0 && bytes.HasPrefix(seg, []byte("JFIF\x00")):
			jfif = true
		case marker == 0xEE && len(seg) >= 12 && bytes.HasPrefix(seg, []byte("Adobe")):
			adobe, transform = true, seg[11]
		case marker == 0xC0 || marker == 0xC1 || marker == 0xC2:
			if len(seg) < 6 {
				return f, false
			}
			nc := int(seg[5])
			if len(seg) < 6+3*nc {
				return f, false
			}
			f.progressive = marker == 0xC2
			for k := range nc {
				c := seg[6+3*k:]
				f.comps = append(f.comps, jpegComp{id: c[0], h: c[1] >> 4, v: c[1] & 0x0F})
			}
			switch {
			case nc != 3, jfif:
			case adobe:
				f.rgb = transform == 0
			default:
				f.rgb = f.comps[0].id == 'R' && f.comps[1].id == 'G' && f.comps[2].id == 'B'
			}
			return f, true
		}
		i += 2 + n
	}
	return f, false
}

// decodeImage decodes the image whose header DecodeConfig read as cfg; the
// decoded picture must have that size, which decodeCost was estimated for.
func decodeImage(r io.Reader, cfg image.Config) (image.Image, error) {
	img, _, err := image.Decode(bufio.NewReader(r))
	if err != nil {
		return nil, err
	}
	if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return nil, fmt.Errorf("decoded %dx%d, header says %dx%d", b.Dx(), b.Dy(), cfg.Width, cfg.Height)
	}
	return img, nil
}
