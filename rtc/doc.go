// Package rtc will hold Parley's selective forwarding unit (SFU) for voice and
// video calls, built on Pion WebRTC: rooms, participants, track forwarding and
// the signaling that CallsService drives.
//
// It knows nothing of Connect, PostgreSQL or users: it reports upward through
// an interface, so the server package adapts it to the API. The calls issue
// builds it; until then this package holds only this documentation.
package rtc
