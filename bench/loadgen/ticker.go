package main

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"

	lksdk "github.com/livekit/server-sdk-go/v2"
)

const framePeriod = 20 * time.Millisecond

// sender replays a pre-encoded packet loop on one published track. Only the
// ticker goroutine touches pkt, seq, ts and last.
type sender struct {
	track     *lksdk.LocalTrack
	loop      [][]byte
	pkt       rtp.Packet
	started   bool
	k0        int64 // tick index of the first packet
	lastTick  int64
	firstSent atomic.Int64 // ns since start of the first packet written, 0 before
	sent      atomic.Int64
	stopped   atomic.Bool
}

func newSender(track *lksdk.LocalTrack, loop [][]byte) *sender {
	s := &sender{track: track, loop: loop}
	s.pkt.Header = rtp.Header{
		Version:        2,
		SequenceNumber: uint16(rand.Uint32()),
		Timestamp:      rand.Uint32(),
		Marker:         true,
	}
	return s
}

// ticker is the one goroutine that writes the next packet of every active
// track every 20 ms. It measures how late it wakes up.
type ticker struct {
	start   time.Time
	mu      sync.Mutex
	senders atomic.Pointer[[]*sender]

	ticks       atomic.Int64
	lateTicks   atomic.Int64
	maxLateness atomic.Int64 // ns
	stop        chan struct{}
	done        chan struct{}
}

func newTicker(start time.Time) *ticker {
	t := &ticker{start: start, stop: make(chan struct{}), done: make(chan struct{})}
	empty := []*sender{}
	t.senders.Store(&empty)
	return t
}

func (t *ticker) add(s *sender) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.senders.Load()
	next := make([]*sender, 0, len(old)+1)
	next = append(next, old...)
	next = append(next, s)
	t.senders.Store(&next)
}

func (t *ticker) remove(s *sender) {
	s.stopped.Store(true)
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.senders.Load()
	next := make([]*sender, 0, len(old))
	for _, o := range old {
		if o != s {
			next = append(next, o)
		}
	}
	t.senders.Store(&next)
}

func (t *ticker) run() {
	defer close(t.done)
	timer := time.NewTimer(framePeriod)
	defer timer.Stop()
	k := int64(1)
	for {
		deadline := t.start.Add(time.Duration(k) * framePeriod)
		timer.Reset(time.Until(deadline))
		select {
		case <-t.stop:
			return
		case <-timer.C:
		}
		now := time.Now()
		late := now.Sub(deadline)
		t.ticks.Add(1)
		if late > 10*time.Millisecond {
			t.lateTicks.Add(1)
		}
		if int64(late) > t.maxLateness.Load() {
			t.maxLateness.Store(int64(late))
		}
		// Deadlines missed entirely are skipped: the RTP clock follows the wall
		// clock (a timestamp jump, as after a lost packet), one packet per tick.
		if late >= framePeriod {
			k += int64(late / framePeriod)
		}
		nowNs := int64(now.Sub(t.start))
		for _, s := range *t.senders.Load() {
			s.write(k, nowNs)
		}
		k++
	}
}

func (s *sender) write(k, nowNs int64) {
	if s.stopped.Load() || !s.track.IsBound() {
		return
	}
	if !s.started {
		s.started = true
		s.k0 = k
	} else {
		s.pkt.SequenceNumber++
		s.pkt.Timestamp += uint32(k-s.lastTick) * frameSamples
		s.pkt.Marker = false
	}
	s.lastTick = k
	s.pkt.Payload = s.loop[int((k-s.k0)%int64(len(s.loop)))]
	s.pkt.Extension = false
	s.pkt.Extensions = s.pkt.Extensions[:0]
	if err := s.track.WriteRTP(&s.pkt, nil); err != nil {
		return
	}
	if s.sent.Add(1) == 1 {
		s.firstSent.Store(nowNs)
	}
}

func (t *ticker) close() {
	close(t.stop)
	<-t.done
}
