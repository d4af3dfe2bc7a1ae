// Package rtc is Parley's selective forwarding unit (SFU) for voice and video
// calls, built on Pion WebRTC. Every participant has one PeerConnection with
// the server, sends its media once, and receives every other participant's
// tracks through it.
//
// It knows nothing of Connect, PostgreSQL or users: rooms and participants are
// named by opaque strings (use SDP-token-safe ones, such as UUIDs: a
// participant's id is the stream id of the tracks it publishes), and the SFU
// reports upward through the Signaler interface, which the server package
// implements on top of a participant's signaling stream.
//
// # Shape
//
// New builds an SFU once, with one webrtc.API (Pion's default codecs, among
// them Opus, VP8, VP9, H.264 and AV1, forwarded as negotiated; its default
// interceptors: NACK, RTCP reports, stats, TWCC feedback to publishers) and
// the networking of Config: one UDP port shared by every peer (ICE UDP mux) or
// a port range, public IPs to advertise (NAT 1:1), and room limits. SFU.Close
// stops everything it started.
//
// CreateRoom makes a Room under an id (AudioOnly rooms admit 50 by default,
// others 16); Room.Join adds a Participant with its Signaler and fails with
// ErrRoomFull at the limit. A room lives until Room.Close or SFU.Close.
//
// # Signaling
//
// The server is always the offerer, so there is no glare, and it never has two
// offers outstanding: changes made while an offer waits are folded into the
// next one, sent when the answer arrives. Offers are numbered (Offer.Revision)
// and Participant.Answer must quote the outstanding one (else ErrStaleAnswer).
// ICE candidates trickle both ways: Signaler.Candidate and
// Participant.AddCandidate (which keeps candidates that arrive before their
// answer). A client that lost its signaling stream and opened a new one gets
// everything again with Participant.Resync: the participants, the tracks it
// receives, the outstanding offer, and an ICE restart.
//
// A participant publishes by sending on slots: the first offer has one
// receive-only transceiver per source (microphone; in video rooms camera and
// screen too), and Offer.SendMIDs maps each slot's mid to its source. The
// client attaches its microphone, camera and shared screen to those
// transceivers' senders (a browser answers with them sendonly and uses
// replaceTrack). Media arriving on a slot publishes that source, labelled by
// the slot, so a screen share is told from a camera without the client naming
// tracks. Participant.Unpublish(source) takes a source down (sending on the
// slot again republishes it after a short grace, so packets in flight do not
// bring it back); Participant.SetMuted announces a mute change.
//
// # Forwarding
//
// Each published track gets a TrackLocalStaticRTP that its read loop writes
// every RTP packet to; the SFU adds that local track to every other
// participant's connection, announces it with Signaler.TrackPublished (with
// the publisher, source and the mid it arrives on) before the offer that adds
// it, and removes it with Signaler.TrackUnpublished when it goes. The SFU asks
// the publisher for a keyframe (PLI) when a subscriber's answer is applied and
// when a subscriber's connection comes up, and forwards subscribers' PLI and
// FIR (spaced 200 ms apart); NACKs are answered by the interceptors.
//
// # Leaving and failures
//
// Participant.Leave, a connection the client closed, Room.Close and SFU.Close
// remove a participant's tracks from everyone at once and end with
// Signaler.Closed. A connection that fails (no traffic for
// Config.DisconnectedTimeout plus Config.FailedTimeout) loses its published
// tracks and gets an ICE-restart offer; when media flows again its sources are
// published anew. Participant.RestartICE does the same on the client's
// request. Deciding that a silent participant has left is the caller's call.
//
// # Concurrency
//
// Every method is safe for concurrent use. Signaler calls for one participant
// come in order from one goroutine, never while the SFU holds a lock, so a
// Signaler may call back into the Participant. No package state: everything
// hangs off the SFU, and every goroutine belongs to a participant or the SFU
// and ends with it.
package rtc
