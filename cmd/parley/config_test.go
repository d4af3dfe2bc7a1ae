package main

import (
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/server"
	"github.com/parley-chat/parley/storage"
)

func TestConfigReadsMediaSettings(t *testing.T) {
	c, err := parseConfig("serve", []string{"-media-max-image-bytes", "1000"}, envFrom(map[string]string{
		"PARLEY_DATA_DIR":                 "/srv/parley",
		"PARLEY_S3_ENDPOINT":              "https://s3.example.com",
		"PARLEY_S3_BUCKET":                "chat",
		"PARLEY_S3_ACCESS_KEY":            "AK",
		"PARLEY_S3_SECRET_KEY":            "SK",
		"PARLEY_S3_REGION":                "eu-west-1",
		"PARLEY_S3_PATH_STYLE":            "true",
		"PARLEY_MEDIA_MAX_IMAGE_BYTES":    "5",
		"PARLEY_MEDIA_MAX_VOICE_DURATION": "2m",
		"PARLEY_MEDIA_VOICE_TYPES":        "audio/ogg, audio/mpeg,",
		"PARLEY_UPLOAD_LIMIT":             "7",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := c.server.Media
	wantS3 := storage.S3Config{Endpoint: "https://s3.example.com", Bucket: "chat", AccessKey: "AK", SecretKey: "SK", Region: "eu-west-1", PathStyle: true}
	if m.S3 != wantS3 {
		t.Errorf("got S3 %+v, want %+v", m.S3, wantS3)
	}
	if m.MaxImageBytes != 1000 {
		t.Errorf("got MaxImageBytes %d, want the flag's 1000 over the environment's 5", m.MaxImageBytes)
	}
	if m.MaxVoiceDuration != 2*time.Minute || !slices.Equal(m.VoiceTypes, []string{"audio/ogg", "audio/mpeg"}) {
		t.Errorf("got voice limits %v %v", m.MaxVoiceDuration, m.VoiceTypes)
	}
	if m.UploadsPerUser != (server.Rate{Burst: 7, Per: 10 * time.Minute}) {
		t.Errorf("got upload limit %+v", m.UploadsPerUser)
	}
	if m.Dir != filepath.Join("/srv/parley", "media") {
		t.Errorf("got media dir %q, want it under the data dir", m.Dir)
	}
	def := server.DefaultMediaConfig()
	if m.MaxVideoBytes != def.MaxVideoBytes || !slices.Equal(m.ImageTypes, def.ImageTypes) || m.URLTTL != def.URLTTL {
		t.Errorf("unset settings lost their defaults: %+v", m)
	}
	for name, env := range map[string]map[string]string{
		"a zero URL lifetime":           {"PARLEY_MEDIA_URL_TTL": "0s"},
		"a public URL without a scheme": {"PARLEY_PUBLIC_URL": "chat.example.com"},
		"a size that is no number":      {"PARLEY_MEDIA_MAX_FILE_BYTES": "lots"},
	} {
		if _, err := parseConfig("serve", nil, envFrom(env), io.Discard); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
}

func TestConfigReadsCallSettings(t *testing.T) {
	c, err := parseConfig("serve", []string{"-call-ring-timeout", "30s"}, envFrom(map[string]string{
		"PARLEY_CALL_RING_TIMEOUT": "10s",
		"PARLEY_STUN_URLS":         "stun:a.example.com:3478, stun:b.example.com:3478",
		"PARLEY_TURN_URLS":         "turn:a.example.com:3478?transport=udp",
		"PARLEY_TURN_SECRET":       "s3cret",
		"PARLEY_TURN_TTL":          "2h",
		"PARLEY_RTC_UDP_PORT_MIN":  "50000",
		"PARLEY_RTC_UDP_PORT_MAX":  "50100",
		"PARLEY_RTC_PUBLIC_IPS":    "203.0.113.7",
		"PARLEY_RTC_LOOPBACK":      "true",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.server.CallRingTimeout != 30*time.Second {
		t.Errorf("got ring timeout %v, want the flag's 30s over the environment's 10s", c.server.CallRingTimeout)
	}
	want := server.ICEConfig{
		STUNURLs:   []string{"stun:a.example.com:3478", "stun:b.example.com:3478"},
		TURNURLs:   []string{"turn:a.example.com:3478?transport=udp"},
		TURNSecret: "s3cret",
		TURNTTL:    2 * time.Hour,
	}
	ice := c.server.ICE
	if !slices.Equal(ice.STUNURLs, want.STUNURLs) || !slices.Equal(ice.TURNURLs, want.TURNURLs) || ice.TURNSecret != want.TURNSecret || ice.TURNTTL != want.TURNTTL {
		t.Errorf("got ICE %+v, want %+v", ice, want)
	}
	if r := c.server.RTC; r.UDPPortMin != 50000 || r.UDPPortMax != 50100 || !slices.Equal(r.PublicIPs, []string{"203.0.113.7"}) || !r.Loopback {
		t.Errorf("got media networking %+v", r)
	}
	def, err := parseConfig("serve", nil, envFrom(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if def.server.RTC.Loopback {
		t.Error("loopback candidates are on by default")
	}
	if def.server.CallRingTimeout != 45*time.Second || def.server.SignalsGrace != 30*time.Second {
		t.Errorf("default ring timeout %v and Signals grace %v, want 45s and 30s", def.server.CallRingTimeout, def.server.SignalsGrace)
	}
	for name, env := range map[string]map[string]string{
		"TURN without a secret": {"PARLEY_TURN_URLS": "turn:a.example.com:3478"},
		"a zero ring timeout":   {"PARLEY_CALL_RING_TIMEOUT": "0s"},
		"half a port range":     {"PARLEY_RTC_UDP_PORT_MIN": "50000"},
	} {
		if _, err := parseConfig("serve", nil, envFrom(env), io.Discard); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
}

func TestNodeURLComesFromTheListenAddress(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		tls        bool
		want       string
	}{
		{name: "a concrete host is used as is", addr: "10.1.2.3:8080", want: "http://10.1.2.3:8080"},
		{name: "TLS makes it https", addr: "10.1.2.3:8443", tls: true, want: "https://10.1.2.3:8443"},
		{name: "an IPv6 host gets brackets", addr: "[fd00::1]:8080", want: "http://[fd00::1]:8080"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, err := net.ResolveTCPAddr("tcp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := nodeURL(addr, tc.tls); got != tc.want {
				t.Errorf("nodeURL(%s) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
	// Every interface: a host other machines can reach, never the unspecified one.
	addr, _ := net.ResolveTCPAddr("tcp", "0.0.0.0:8080")
	got := nodeURL(addr, false)
	if strings.Contains(got, "0.0.0.0") || !strings.HasSuffix(got, ":8080") || !strings.HasPrefix(got, "http://") {
		t.Errorf("nodeURL(0.0.0.0:8080) = %q, want http://<an address of this machine>:8080", got)
	}
}
