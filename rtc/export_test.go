package rtc

import "net"

// SharedConn returns the SFU's shared UDP socket, or nil without one.
func SharedConn(s *SFU) net.PacketConn { return s.udp }
