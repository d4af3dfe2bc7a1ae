package rtc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// Errors the SFU returns. The server package maps them to API codes:
// ErrRoomFull to ResourceExhausted, ErrStaleAnswer to FailedPrecondition,
// ErrInvalidSignal to InvalidArgument.
var (
	// ErrClosed means the SFU was closed.
	ErrClosed = errors.New("rtc: SFU closed")
	// ErrRoomExists means CreateRoom was given an id already in use.
	ErrRoomExists = errors.New("rtc: room already exists")
	// ErrRoomClosed means the room was closed.
	ErrRoomClosed = errors.New("rtc: room closed")
	// ErrRoomFull means the room has as many participants as its limit.
	ErrRoomFull = errors.New("rtc: room is full")
	// ErrAlreadyJoined means the participant id is already in the room.
	ErrAlreadyJoined = errors.New("rtc: participant already in the room")
	// ErrLeft means the participant has left the room.
	ErrLeft = errors.New("rtc: participant left")
	// ErrStaleAnswer means an answer does not answer the outstanding offer.
	ErrStaleAnswer = errors.New("rtc: answer does not match the outstanding offer")
	// ErrInvalidSignal means an answer, candidate or source could not be used.
	ErrInvalidSignal = errors.New("rtc: invalid signal")
	// ErrConnectionClosed means the participant's peer connection closed.
	ErrConnectionClosed = errors.New("rtc: peer connection closed")
)

// Default room limits.
const (
	DefaultMaxVideoParticipants = 16
	DefaultMaxAudioParticipants = 50
)

// udpSocketBuffer is the receive and send buffer asked for the shared UDP
// socket. The usual default, 208 KiB, holds 40 ms of a 5,000 packets/s video
// forwarded by the server; 4 MiB holds most of a second.
const udpSocketBuffer = 4 << 20

// Config sets up the SFU's networking and limits. The zero value is usable:
// ephemeral UDP ports on every interface, no public IP rewriting, no ICE
// servers, default limits.
type Config struct {
	// UDPAddr, when set (such as ":3478" or "127.0.0.1:0"), makes every peer
	// connection share one UDP socket bound to it (ICE UDP mux). Otherwise each
	// peer connection gathers on its own ports, within UDPPortMin–UDPPortMax
	// when those are set.
	UDPAddr string
	// UDPPortMin and UDPPortMax bound the ephemeral ports; both or neither.
	UDPPortMin, UDPPortMax uint16
	// PublicIPs are the addresses to advertise instead of the host's own (NAT
	// 1:1), such as the public IP of a cloud VM.
	PublicIPs []string
	// ICEServers are STUN/TURN servers the server itself uses.
	ICEServers []webrtc.ICEServer
	// Loopback gathers loopback candidates too: for tests and a single machine.
	Loopback bool
	// MaxVideoParticipants limits rooms that carry video; 0 means 16.
	MaxVideoParticipants int
	// MaxAudioParticipants limits audio-only rooms; 0 means 50.
	MaxAudioParticipants int
	// DisconnectedTimeout and FailedTimeout are how long a silent connection
	// takes to count as disconnected and failed; 0 means 2 s and 5 s. A failed
	// connection loses its published tracks and gets an ICE-restart offer.
	DisconnectedTimeout, FailedTimeout time.Duration
}

// SFU is a selective forwarding unit: it holds rooms of participants, each
// with one PeerConnection to the server, and forwards every track a
// participant publishes to every other participant in its room.
type SFU struct {
	api    *webrtc.API
	cfg    Config
	log    *slog.Logger
	udp    net.PacketConn // the shared socket when cfg.UDPAddr is set
	udpMux ice.UDPMux

	mu     sync.Mutex
	rooms  map[string]*Room
	closed bool
	wg     sync.WaitGroup // see goroutine
}

// New builds an SFU. Close it to stop every room and release its socket.
// A nil log discards the SFU's logs.
func New(cfg Config, log *slog.Logger) (*SFU, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxVideoParticipants <= 0 {
		cfg.MaxVideoParticipants = DefaultMaxVideoParticipants
	}
	if cfg.MaxAudioParticipants <= 0 {
		cfg.MaxAudioParticipants = DefaultMaxAudioParticipants
	}
	if cfg.DisconnectedTimeout <= 0 {
		cfg.DisconnectedTimeout = 2 * time.Second
	}
	if cfg.FailedTimeout <= 0 {
		cfg.FailedTimeout = 5 * time.Second
	}
	s := &SFU{cfg: cfg, log: log, rooms: make(map[string]*Room)}

	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("rtc: codecs: %w", err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		return nil, fmt.Errorf("rtc: interceptors: %w", err)
	}

	var se webrtc.SettingEngine
	se.LoggerFactory = pionLogs{log}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(cfg.DisconnectedTimeout, cfg.FailedTimeout, time.Second)
	se.SetIncludeLoopbackCandidate(cfg.Loopback)
	if len(cfg.PublicIPs) > 0 {
		se.SetNAT1To1IPs(cfg.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	switch {
	case cfg.UDPAddr != "":
		conn, err := net.ListenPacket("udp", cfg.UDPAddr)
		if err != nil {
			return nil, fmt.Errorf("rtc: listen for ICE: %w", err)
		}
		if uc, ok := conn.(*net.UDPConn); ok {
			// Every call's media goes through this one socket: let the
			// kernel queue a scheduling hiccup's worth (capped at
			// net.core.rmem_max and wmem_max) rather than drop packets.
			if err := uc.SetReadBuffer(udpSocketBuffer); err != nil {
				log.Debug("rtc: UDP receive buffer", "err", err)
			}
			if err := uc.SetWriteBuffer(udpSocketBuffer); err != nil {
				log.Debug("rtc: UDP send buffer", "err", err)
			}
		}
		s.udp = conn
		s.udpMux = webrtc.NewICEUDPMux(pionLogs{log}.NewLogger("udpmux"), conn)
		se.SetICEUDPMux(s.udpMux)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	case cfg.UDPPortMin != 0 || cfg.UDPPortMax != 0:
		if err := se.SetEphemeralUDPPortRange(cfg.UDPPortMin, cfg.UDPPortMax); err != nil {
			return nil, fmt.Errorf("rtc: UDP port range: %w", err)
		}
	}
	s.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return s, nil
}

// LocalAddr is the shared UDP socket's address, or nil without Config.UDPAddr.
func (s *SFU) LocalAddr() net.Addr {
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// RoomOptions shape a room.
type RoomOptions struct {
	// AudioOnly rooms offer only a microphone slot and admit up to
	// Config.MaxAudioParticipants; other rooms offer microphone, camera and
	// screen slots and admit up to Config.MaxVideoParticipants.
	AudioOnly bool
}

// CreateRoom creates a room under an opaque id, such as a call's. It returns
// ErrRoomExists when the id is taken and ErrClosed after Close.
func (s *SFU) CreateRoom(id string, opts RoomOptions) (*Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if _, ok := s.rooms[id]; ok {
		return nil, ErrRoomExists
	}
	limit := s.cfg.MaxVideoParticipants
	if opts.AudioOnly {
		limit = s.cfg.MaxAudioParticipants
	}
	r := &Room{
		id:           id,
		sfu:          s,
		opts:         opts,
		limit:        limit,
		log:          s.log.With("room_id", id),
		participants: make(map[string]*Participant),
		pubs:         make(map[*publication]struct{}),
	}
	s.rooms[id] = r
	return r, nil
}

// Room returns the room with the id, if it exists.
func (s *SFU) Room(id string) (*Room, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rooms[id]
	return r, ok
}

func (s *SFU) removeRoom(r *Room) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rooms[r.id] == r {
		delete(s.rooms, r.id)
	}
}

// Close closes every room (their participants' Signalers get Closed with
// ErrClosed), waits for every goroutine the SFU started, and releases the
// shared UDP socket. It waits for Signaler calls in progress, so a Signaler
// must not call it.
func (s *SFU) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	rooms := make([]*Room, 0, len(s.rooms))
	for _, r := range s.rooms {
		rooms = append(rooms, r)
	}
	s.mu.Unlock()

	for _, r := range rooms {
		r.close(ErrClosed)
	}
	s.wg.Wait()
	if s.udpMux != nil {
		return s.udpMux.Close()
	}
	return nil
}

// goroutine runs fn on a goroutine Close waits for, unless the SFU is closed
// (then it reports false and Close deals with what fn would have done).
func (s *SFU) goroutine(fn func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}
