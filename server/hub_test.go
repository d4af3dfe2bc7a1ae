package server

import (
	"fmt"
	"testing"

	parleyv1 "github.com/parley-chat/parley/gen/go/parley/v1"
)

func event(seq int64) *parleyv1.SubscribeResponse {
	return &parleyv1.SubscribeResponse{Event: &parleyv1.SubscribeResponse_Message{Message: &parleyv1.Message{Seq: seq}}}
}

func TestHubCutsOffAStreamThatFallsBehindAndNoOther(t *testing.T) {
	h := newHub(4)
	slow, _ := h.subscribe("u", "s1", 10, nil)
	fast, _ := h.subscribe("u", "s2", 10, nil)
	other, _ := h.subscribe("v", "s3", 10, nil)
	got := 0
	for i := range 100 {
		h.publish([]string{"u", "v"}, "", event(int64(i)))
		// fast and other keep up; slow never reads.
		for _, s := range []*subscription{fast, other} {
			<-s.ready
			if evs := s.take(); len(evs) != 1 || evs[0].GetMessage().GetSeq() != int64(i) {
				t.Fatalf("stream %s got %v, want event %d alone", s.sessionID, evs, i)
			}
		}
		got++
	}
	select {
	case <-slow.done:
	default:
		t.Fatal("a stream 100 events behind with a buffer of 4 is still open")
	}
	if slow.reason != endOverflowed {
		t.Fatalf("slow stream ended with reason %v, want overflowed", slow.reason)
	}
	if n := slow.waiting(); n != 4 {
		t.Fatalf("slow stream holds %d events, want the 4 of its buffer: memory is not bounded by it", n)
	}
	for _, s := range []*subscription{fast, other} {
		select {
		case <-s.done:
			t.Fatalf("stream %s that kept up was ended (reason %v)", s.sessionID, s.reason)
		default:
		}
	}
	if got != 100 {
		t.Fatalf("streams that kept up got %d events, want 100", got)
	}
}

func TestHubEndsOnlyTheRevokedSessionsStreams(t *testing.T) {
	h := newHub(4)
	a, _ := h.subscribe("u", "s1", 10, nil)
	b, _ := h.subscribe("u", "s2", 10, nil)
	h.endSessions("u", "s1")
	select {
	case <-a.done:
	default:
		t.Fatal("revoked session's stream still open")
	}
	if a.reason != endRevoked {
		t.Fatalf("reason = %v, want revoked", a.reason)
	}
	select {
	case <-b.done:
		t.Fatal("another session's stream was ended")
	default:
	}
}

func TestHubLimitsStreamsPerUserAndForgetsClosedOnes(t *testing.T) {
	h := newHub(1)
	var subs []*subscription
	for i := range 3 {
		s, ok := h.subscribe("u", fmt.Sprint(i), 3, nil)
		if !ok {
			t.Fatalf("stream %d of 3 refused", i+1)
		}
		subs = append(subs, s)
	}
	if _, ok := h.subscribe("u", "x", 3, nil); ok {
		t.Fatal("a 4th stream was admitted with a limit of 3")
	}
	for _, s := range subs {
		h.unsubscribe(s)
	}
	if len(h.users) != 0 {
		t.Fatalf("hub still tracks %d users after every stream closed", len(h.users))
	}
	h.publish([]string{"u"}, "", event(1)) // must not block or panic with no streams
}
