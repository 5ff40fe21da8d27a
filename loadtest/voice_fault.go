package loadtest

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/protocol"
)

// A fault under voice (`loadtest fault --under voice`, issue 11 §6): while
// every speaker talks without pause, the fault (a voice node killed,
// stopped or cut off) moves rooms to other nodes. Each member follows its
// room as a client library does: a VOICE_SERVER_UPDATE on its gateway
// session, then a new voice connection there, while its send and receive
// loops go on with whichever connection is current. The report adds, per
// moved participant, its longest silence from any speaker of its room
// after the fault (the gap), and the loss of packets sent before the
// fault, while rooms were moving, and after every moved member was back.

// faultBucket is how finely sends are binned by time for the loss windows.
const faultBucket = 100 * time.Millisecond

type voiceFault struct {
	fr      *faultRun
	cancel  context.CancelFunc // stops the followers
	wg      sync.WaitGroup
	buckets []lossBucket // by send time since sendStart

	followErrors atomic.Int64
	mu           sync.Mutex
	why          map[string]int // follow errors by kind
}

type lossBucket struct{ expected, received atomic.Int64 }

// faultState is a member's part: kept by its follower and its receiver.
type faultState struct {
	movedAt atomic.Int64 // unix ns its newest voice connection was ready; 0: never moved
	// Its receiver's alone: the last packet from each speaker after the
	// fault, and the longest silence so far.
	last   map[*voiceMember]time.Time
	maxGap time.Duration
}

// begin starts the fault's clock and one follower per member.
func (f *voiceFault) begin(ctx context.Context, v *voiceRun) {
	f.buckets = make([]lossBucket, int((v.o.Duration+f.fr.recoverWithin())/faultBucket)+1)
	ctx, f.cancel = context.WithCancel(ctx)
	f.why = map[string]int{}
	for _, m := range v.members {
		m.fault.last = map[*voiceMember]time.Time{}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.follow(ctx, v, m)
		}()
	}
	f.fr.start(ctx, v.sendStart)
}

// follow moves m to its room's new node at each VOICE_SERVER_UPDATE.
func (f *voiceFault) follow(ctx context.Context, v *voiceRun, m *voiceMember) {
	for {
		old := m.vc()
		vc, err := FollowVoiceServerWith(ctx, m.gw, v.dialer, v.guild, m.id, old.Session, m.media)
		if err != nil {
			if ctx.Err() == nil {
				f.followErrors.Add(1)
				f.mu.Lock()
				msg := err.Error()
				f.why[failureKey(err)+": "+msg[:min(len(msg), 60)]]++
				f.mu.Unlock()
			}
			return
		}
		if m.log != nil {
			vc.SetSpeaking(protocol.SpeakingMicrophone)
			v.spMu.Lock()
			v.speakers[vc.SSRC] = m
			v.spMu.Unlock()
		}
		m.vcp.Store(vc)
		old.Close()
		m.fault.movedAt.Store(time.Now().UnixNano())
	}
}

// bucket is the loss bucket of a packet sent at unix ns at.
func (f *voiceFault) bucket(v *voiceRun, at int64) *lossBucket {
	i := int(time.Duration(at-v.sendStart.UnixNano()) / faultBucket)
	return &f.buckets[min(max(i, 0), len(f.buckets)-1)]
}

// heard records, on m's receiver, a packet from sp sent at unix ns at.
func (f *voiceFault) heard(v *voiceRun, m, sp *voiceMember, at int64) {
	now := time.Now()
	if t0 := f.fr.startedAt(); !t0.IsZero() && now.After(t0) {
		m.fault.silence(sp, t0, now)
	}
	if at != 0 {
		f.bucket(v, at).received.Add(1)
	}
}

// silence ends a silence from sp at now (no earlier than the fault, t0).
func (s *faultState) silence(sp *voiceMember, t0, now time.Time) {
	prev, ok := s.last[sp]
	if !ok || prev.Before(t0) {
		prev = t0
	}
	s.maxGap = max(s.maxGap, now.Sub(prev))
	s.last[sp] = now
}

// end stops the followers once the receivers have, and closes each
// member's silences still open at the speakers' end.
func (f *voiceFault) end(v *voiceRun) {
	f.cancel()
	f.wg.Wait()
	<-f.fr.done
	t0 := f.fr.startedAt()
	if t0.IsZero() {
		return
	}
	for _, m := range v.members {
		for s := 0; s < v.o.Speakers; s++ {
			if sp := v.members[m.room*v.o.Participants+s]; sp != m {
				m.fault.silence(sp, t0, v.sendEnd)
			}
		}
	}
}

// report adds the fault's numbers to r.
func (f *voiceFault) report(v *voiceRun, r *Result) error {
	r.Scenario = "fault"
	r.Params["under"] = "voice"
	err := f.fr.reportCommand(r, v.start)
	t0 := f.fr.startedAt()
	c := r.Counters
	c["follow_errors"] = float64(f.followErrors.Load())
	for k, n := range f.why {
		r.Failures["follow: "+k] += n
	}
	var gaps Histogram
	var back time.Time
	moved := 0
	for _, m := range v.members {
		if at := m.fault.movedAt.Load(); at != 0 {
			moved++
			gaps.Record(m.fault.maxGap)
			if t := time.Unix(0, at); t.After(back) {
				back = t
			}
		}
	}
	c["participants_moved"] = float64(moved)
	if gaps.Count() > 0 {
		r.Latency["voice_gap"] = gaps.Summarize()
	}
	if t0.IsZero() {
		return err
	}
	if back.IsZero() {
		back = t0
	} else {
		c["recovery_ms"] = f.fr.since(back)
	}
	windows := []struct {
		name     string
		from, to time.Time
	}{{"before", v.sendStart, t0}, {"during", t0, back}, {"after", back, v.sendEnd.Add(faultBucket)}} // to the last bucket
	for _, w := range windows {
		var exp, got int64
		for i := range f.buckets { // a bucket counts where it starts
			if start := v.sendStart.Add(time.Duration(i) * faultBucket); !start.Before(w.from) && start.Before(w.to) {
				exp += f.buckets[i].expected.Load()
				got += f.buckets[i].received.Load()
			}
		}
		c["expected_"+w.name] = float64(exp)
		if exp > 0 {
			c["loss_"+w.name+"_percent"] = 100 * float64(exp-got) / float64(exp)
		}
	}
	f.fr.mark(r, v.latency, back)
	return err
}
