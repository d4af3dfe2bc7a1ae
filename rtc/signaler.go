package rtc

import "github.com/pion/webrtc/v4"

// Source says what a published track carries. The zero value is not a source.
type Source int

// The sources a participant can publish. A participant publishes a source by
// sending media on the receive slot (transceiver) the server offered for it:
// Offer.SendMIDs maps each slot's mid to its source.
const (
	SourceUnspecified Source = iota
	SourceMicrophone
	SourceCamera
	SourceScreen
)

// String returns the source's lower-case name.
func (s Source) String() string {
	switch s {
	case SourceMicrophone:
		return "microphone"
	case SourceCamera:
		return "camera"
	case SourceScreen:
		return "screen"
	default:
		return "unspecified"
	}
}

func (s Source) valid() bool { return s >= SourceMicrophone && s <= SourceScreen }

func (s Source) kind() webrtc.RTPCodecType {
	if s == SourceMicrophone {
		return webrtc.RTPCodecTypeAudio
	}
	return webrtc.RTPCodecTypeVideo
}

// Offer is an SDP offer from the server to one participant. The server is
// always the offerer and never has two offers outstanding: the participant
// answers it with Participant.Answer, quoting Revision.
type Offer struct {
	// SDP is the session description, to be set as the remote offer.
	SDP string
	// Revision numbers the participant's offers from 1.
	Revision int64
	// ICERestart is true when the offer carries new ICE credentials.
	ICERestart bool
	// SendMIDs maps the mid of each transceiver on which the participant may
	// send media to the source it must carry. Sending on a slot publishes the
	// source; a slot nobody sends on publishes nothing.
	SendMIDs map[string]Source
}

// Track describes a track a participant receives from another.
type Track struct {
	// ParticipantID is the publisher.
	ParticipantID string
	// Source says what the track carries.
	Source Source
	// MID is the mid of the transceiver that carries the track on the
	// receiving participant's connection.
	MID string
	// TrackID and StreamID are the track's msid in the SDP (MediaStreamTrack.id
	// and MediaStream.id on the receiver). StreamID is the publisher's id.
	TrackID, StreamID string
	// Muted is whether the publisher had muted the track when this was sent.
	Muted bool
}

// Signaler receives what the SFU has to tell one participant. The server
// package implements it on top of the participant's signaling stream.
//
// Calls for one participant come from one goroutine, in order, and never while
// the SFU holds a lock: a Signaler may call the Participant's methods. It must
// not block for long (queue and return), since it delays that participant's
// later signals and Participant.Leave waits for the call in progress.
type Signaler interface {
	// Offer delivers an SDP offer to answer with Participant.Answer.
	Offer(Offer)
	// Candidate delivers one of the server's ICE candidates; an empty
	// Candidate string marks the end of candidates.
	Candidate(webrtc.ICECandidateInit)
	// ParticipantJoined announces a participant in the room: on Join, everyone
	// already there, then everyone who joins later.
	ParticipantJoined(participantID string)
	// ParticipantLeft announces a participant who left the room.
	ParticipantLeft(participantID string)
	// TrackPublished announces a track this participant will receive. It comes
	// before the offer that adds the track.
	TrackPublished(Track)
	// TrackUnpublished announces that a track this participant received is
	// gone; the next offer makes its m-section inactive.
	TrackUnpublished(Track)
	// MuteChanged announces that a publisher muted or unmuted a source.
	MuteChanged(participantID string, source Source, muted bool)
	// Closed is the last call: the participant is out of the room. err is nil
	// after Participant.Leave, otherwise why the SFU removed it (for example
	// ErrConnectionClosed, ErrRoomClosed or ErrClosed).
	Closed(err error)
}
