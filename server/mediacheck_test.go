package server

import (
	"image"
	"image/color"
	"testing"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

func TestSniffNamesTheFormatsOfVoiceAndVideo(t *testing.T) {
	tests := []struct {
		name string
		head string
		want string
	}{
		{"MP3 with an ID3 tag", "ID3\x03\x00\x00\x00\x00\x00\x00", "audio/mpeg"},
		{"MP3 without a tag", "\xFF\xFB\x90\x64\x00\x00\x00\x00", "audio/mpeg"},
		{"AAC in ADTS", "\xFF\xF1\x50\x80\x02\x1F\xFC", "audio/aac"},
		{"AMR", "#!AMR\n\x3c", "audio/amr"},
		{"FLAC", "fLaC\x00\x00\x00\x22", "audio/flac"},
		{"M4A", "\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "video/mp4"},
		{"QuickTime", "\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "video/mp4"},
		{"Ogg", "OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00", "application/ogg"},
		{"WebM", "\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\xF7\x81\x01\x42\xF2\x81\x04\x42\xF3\x81\x08\x42\x82\x84webm", "video/webm"},
		{"HTML", "<!doctype html><p>hi", "text/html"},
		{"noise", "\x01\x02\x03\x04", "application/octet-stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sniff([]byte(tc.head)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCheckContentHoldsFormatsToTheirDeclaration(t *testing.T) {
	voice := DefaultMediaConfig().VoiceTypes
	files := []string{"*"}
	tests := []struct {
		name     string
		kind     parleyv1.MediaKind
		declared string
		head     string
		allowed  []string
		ok       bool
	}{
		{"an M4A voice note", parleyv1.MediaKind_MEDIA_KIND_VOICE, "audio/mp4", "\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", voice, true},
		{"a WebM voice note with codecs", parleyv1.MediaKind_MEDIA_KIND_VOICE, "audio/webm;codecs=opus", "\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01\x42\xF7\x81\x01\x42\xF2\x81\x04\x42\xF3\x81\x08\x42\x82\x84webm", voice, true},
		{"MP3 declared as Ogg", parleyv1.MediaKind_MEDIA_KIND_VOICE, "audio/ogg", "ID3\x03\x00\x00\x00\x00\x00\x00", voice, false},
		{"Ogg off the allow-list", parleyv1.MediaKind_MEDIA_KIND_VOICE, "audio/ogg", "OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00", []string{"audio/mpeg"}, false},
		{"a family on the allow-list", parleyv1.MediaKind_MEDIA_KIND_VOICE, "audio/ogg", "OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00", []string{"audio/*"}, true},
		{"a spreadsheet file, which sniffs as a ZIP", parleyv1.MediaKind_MEDIA_KIND_FILE, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "PK\x03\x04\x14\x00\x06\x00", files, true},
		{"a ZIP declared as a PDF", parleyv1.MediaKind_MEDIA_KIND_FILE, "application/pdf", "PK\x03\x04\x14\x00\x06\x00", files, false},
		{"an HTML file declared as HTML", parleyv1.MediaKind_MEDIA_KIND_FILE, "text/html", "<html><body>", files, true},
		{"an HTML file declared as CSV", parleyv1.MediaKind_MEDIA_KIND_FILE, "text/csv", "<html><body>", files, false},
		{"a CSV file", parleyv1.MediaKind_MEDIA_KIND_FILE, "text/csv", "a,b\n1,2\n", files, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkContent(tc.kind, tc.declared, []byte(tc.head), tc.allowed)
			if (err == nil) != tc.ok {
				t.Errorf("got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestOrientTurnsEveryWayEXIFSays(t *testing.T) {
	// A 3×2 picture whose top-left pixel is the only red one.
	src := image.NewRGBA(image.Rect(0, 0, 3, 2))
	src.Set(0, 0, color.RGBA{255, 0, 0, 255})
	tests := []struct {
		orientation int
		w, h        int
		x, y        int // where the red pixel goes
	}{
		{1, 3, 2, 0, 0}, {2, 3, 2, 2, 0}, {3, 3, 2, 2, 1}, {4, 3, 2, 0, 1},
		{5, 2, 3, 0, 0}, {6, 2, 3, 1, 0}, {7, 2, 3, 1, 2}, {8, 2, 3, 0, 2},
	}
	for _, tc := range tests {
		got := orient(src, tc.orientation)
		if b := got.Bounds(); b.Dx() != tc.w || b.Dy() != tc.h {
			t.Errorf("orientation %d: got %d×%d, want %d×%d", tc.orientation, b.Dx(), b.Dy(), tc.w, tc.h)
			continue
		}
		if r, _, _, _ := got.At(tc.x, tc.y).RGBA(); r != 0xFFFF {
			t.Errorf("orientation %d: the red pixel is not at (%d, %d)", tc.orientation, tc.x, tc.y)
		}
	}
}

func TestJPEGOrientationReadsBothByteOrders(t *testing.T) {
	little := "\xFF\xD8\xFF\xE1\x00\x22Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00"
	big := "\xFF\xD8\xFF\xE1\x00\x22Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x03\x00\x00\x00\x00\x00\x00"
	cut := big[:20]
	for _, tc := range []struct {
		name string
		b    string
		want int
	}{{"little-endian", little, 8}, {"big-endian", big, 3}, {"cut short", cut, 1}, {"not a JPEG", "\x89PNG", 1}} {
		if got := jpegOrientation([]byte(tc.b)); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
}
