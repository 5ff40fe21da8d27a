package loadtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
	"github.com/chorus-voice/chorus/protocol"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
)

// VoiceOptions configures the voice scenario.
type VoiceOptions struct {
	// URL is the node's HTTP base, or a comma-separated list of a
	// cluster's nodes: the participants' gateway sessions are spread over
	// them (the ring places the rooms, on the voice nodes), and what each
	// voice node forwarded is reported apart.
	URL        string
	AdminToken string
	// CAFile is the PEM file to trust for the voice gateway's TLS (the
	// development CA); empty uses the system roots.
	CAFile       string
	Rooms        int
	Participants int // per room
	Speakers     int // per room, the first participants
	// Modes are used round robin over participants; default AES-GCM.
	Modes []crypto.Mode
	// WebRTCShare is the share of each room's participants (0 to 1) that
	// join over WebRTC as browsers do, spread evenly over the room (with
	// 0.5, every second participant, so one of two speakers); the rest use
	// the UDP transport in Modes.
	WebRTCShare float64
	Duration    time.Duration
	// TalkOn and TalkOff are the mean lengths of talk spurts and pauses
	// (exponentially distributed); TalkOff 0 means speakers never pause.
	TalkOn, TalkOff time.Duration
	Progress        func(sent, received int64)
	// Route, if set, sends every client's media to Route(server) instead:
	// a proxy that injects loss or delay.
	Route func(netip.AddrPort) netip.AddrPort
	// Fault, if set, runs at its At after the speakers start
	// (`loadtest fault --under voice`): members follow VOICE_SERVER_UPDATE
	// to their room's new node, and the report adds each moved
	// participant's longest silence and the loss before, during and after
	// (voice_fault.go). Speakers then never pause.
	Fault *Fault
}

// sendLog remembers when each recent packet of a speaker was sent, by RTP
// sequence number, for one-way latency.
type sendLog struct {
	at [1024]atomic.Int64
}

// voiceDialer dials the voice gateway's wss://, trusting caFile (the
// development CA) when given, else the system roots.
func voiceDialer(caFile string) (*websocket.Dialer, error) {
	tlsConf := &tls.Config{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsConf.RootCAs = pool
	}
	return &websocket.Dialer{TLSClientConfig: tlsConf, HandshakeTimeout: 30 * time.Second}, nil
}

// RunVoice puts Rooms × Participants voice clients into Rooms channels;
// Speakers per room send real Opus frames every 20 ms in talk spurts.
// It reports forwarded packets per second, loss, jitter, one-way
// forwarding latency and the server's CPU per forwarded packet.
func RunVoice(ctx context.Context, o VoiceOptions) (*Result, error) {
	if o.Rooms < 1 || o.Participants < 2 || o.Speakers < 1 || o.Speakers > o.Participants {
		return nil, errors.New("loadtest: voice needs rooms >= 1, participants >= 2, 1 <= speakers <= participants")
	}
	if o.WebRTCShare < 0 || o.WebRTCShare > 1 || math.IsNaN(o.WebRTCShare) {
		return nil, fmt.Errorf("loadtest: voice: a WebRTC share of %v is not between 0 and 1", o.WebRTCShare)
	}
	if len(o.Modes) == 0 {
		o.Modes = []crypto.Mode{crypto.AES256GCMRTPSize}
	}
	frames, err := OpusFrames("a")
	if err != nil {
		return nil, err
	}
	bases := nodes(o.URL)
	if len(bases) == 0 {
		return nil, errors.New("loadtest: no node URL")
	}
	v := &voiceRun{o: o, base: bases[0], bases: bases, start: time.Now(), frames: frames, receiveWait: time.Second}
	if o.Fault != nil {
		v.o.TalkOff, v.receiveWait = 0, 20*time.Millisecond
		v.fault = &voiceFault{fr: &faultRun{Fault: *o.Fault, adminBase: bases[0], adminToken: o.AdminToken}}
	}
	if v.dialer, err = voiceDialer(o.CAFile); err != nil {
		return nil, err
	}
	v.r = newResult("voice", map[string]any{"url": o.URL, "rooms": o.Rooms, "participants": o.Participants,
		"speakers": o.Speakers, "webrtc_share": o.WebRTCShare, "duration_s": o.Duration.Seconds(), "talk_on_s": o.TalkOn.Seconds(), "talk_off_s": o.TalkOff.Seconds()})
	if err := v.buildWorld(adminapi.New(v.base, o.AdminToken)); err != nil {
		return nil, err
	}
	if err := v.connect(ctx); err != nil {
		return nil, err
	}
	defer v.close()
	v.drive(ctx)
	return v.report(), nil
}

// webrtcSeat reports whether participant j of a room joins over WebRTC
// when share of them do: those where j·share passes a whole number, so
// the WebRTC seats are spread evenly over the room.
func webrtcSeat(j int, share float64) bool {
	return math.Floor(float64(j+1)*share) > math.Floor(float64(j)*share)
}

// voiceRun is one run of the voice scenario: its world and what it counted.
type voiceRun struct {
	o        VoiceOptions
	base     string   // the first node: admin API
	bases    []string // every node: gateway sessions, CPU
	start    time.Time
	frames   [][]byte
	dialer   *websocket.Dialer
	r        *Result
	guild    string
	channels []string // one per room
	members  []*voiceMember
	spMu     sync.RWMutex
	speakers map[uint32]*voiceMember // by SSRC; a moved speaker has two
	// receiveWait bounds one read, so a receiver notices a replaced
	// voice connection soon (fault runs).
	receiveWait time.Duration
	fault       *voiceFault // nil without a fault (voice_fault.go)

	latency                        *Timed
	sendStart, sendEnd             time.Time
	cpu0, cpu1                     time.Duration
	cpuErr                         error
	sent, expected, received, late atomic.Int64
	expectedWebRTC                 atomic.Int64 // of expected, by WebRTC receivers
	jitterSum, jitterN             atomic.Int64
}

type voiceMember struct {
	id, token string
	media     Media
	room      int
	vcp       atomic.Pointer[VoiceClient] // replaced when a fault moves the room
	gw        *GatewayClient
	log       *sendLog     // speakers only
	webrtcs   int          // speakers only: WebRTC members of its room but itself
	received  atomic.Int64 // packets from speakers of its room
	fault     faultState   // fault runs only (voice_fault.go)
}

func (m *voiceMember) vc() *VoiceClient { return m.vcp.Load() }

// buildWorld creates one guild, one voice channel per room and one user
// per participant through the admin API.
func (v *voiceRun) buildWorld(ad *adminapi.Client) error {
	var run [4]byte
	rand.Read(run[:])
	v.members = make([]*voiceMember, v.o.Rooms*v.o.Participants)
	for i := range v.members {
		var u struct {
			User  struct{ ID string } `json:"user"`
			Token string              `json:"token"`
		}
		if err := ad.Do("POST", "/admin/v1/users", map[string]any{"username": fmt.Sprintf("lv%s%05d", hex.EncodeToString(run[:]), i)}, &u); err != nil {
			return err
		}
		v.members[i] = &voiceMember{id: u.User.ID, token: u.Token}
	}
	var g struct{ ID string }
	if err := ad.Do("POST", "/admin/v1/guilds", map[string]any{"name": "voice load", "owner_id": v.members[0].id}, &g); err != nil {
		return err
	}
	v.guild = g.ID
	for _, m := range v.members[1:] {
		if err := ad.Do("PUT", "/admin/v1/guilds/"+g.ID+"/members/"+m.id, map[string]any{}, nil); err != nil {
			return err
		}
	}
	v.channels = make([]string, v.o.Rooms)
	for i := range v.channels {
		var ch struct{ ID string }
		if err := ad.Do("POST", "/admin/v1/guilds/"+g.ID+"/channels", map[string]any{"name": fmt.Sprintf("room %d", i), "type": 2}, &ch); err != nil {
			return err
		}
		v.channels[i] = ch.ID
	}
	return nil
}

// connect joins everyone to their room, a few at a time, and turns the
// speakers' microphones on; on a failure it closes what it opened.
func (v *voiceRun) connect(ctx context.Context) error {
	ds := dialers(v.base) // loopback source addresses; the nodes share the host
	errs := make(chan error, len(v.members))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, m := range v.members {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, m *voiceMember) {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			gw, err := DialGateway(cctx, ds[i%len(ds)], wsURL(v.bases[i%len(v.bases)]), m.token, int(protocol.IntentGuilds))
			if err != nil {
				errs <- err
				return
			}
			m.gw = gw
			if v.fault != nil {
				// The fault may take the gateway node down too (a rolling
				// restart): the session resumes at another node, as behind a
				// balancer, and VOICE_SERVER_UPDATEs keep coming there.
				home := i % len(v.bases)
				for k, b := range v.bases {
					if k != home {
						gw.Alternates = append(gw.Alternates, wsURL(b))
					}
				}
				gw.ReconnectFor = v.fault.fr.recoverWithin()
				gw.Reconnect.Store(true)
			}
			media := Media{Mode: v.o.Modes[i%len(v.o.Modes)], Route: v.o.Route, WebRTC: webrtcSeat(i%v.o.Participants, v.o.WebRTCShare)}
			vc, err := JoinVoiceWith(cctx, gw, v.dialer, v.guild, v.channels[i/v.o.Participants], m.id, media)
			if err != nil {
				errs <- err
				return
			}
			// A fault run reads the session's dispatches for
			// VOICE_SERVER_UPDATE; others never look at them.
			gw.Discard.Store(v.fault == nil)
			m.media, m.room = media, i/v.o.Participants
			m.vcp.Store(vc)
		}(i, m)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, m := range v.members {
			if vc := m.vc(); vc != nil {
				vc.Close()
			}
			if m.gw != nil {
				m.gw.Close()
			}
		}
		return fmt.Errorf("loadtest: voice setup: %w", err)
	}
	v.speakers = map[uint32]*voiceMember{}
	for room := 0; room < v.o.Rooms; room++ {
		for s := 0; s < v.o.Speakers; s++ {
			m := v.members[room*v.o.Participants+s]
			m.log = &sendLog{}
			for j := 0; j < v.o.Participants; j++ {
				if j != s && v.members[room*v.o.Participants+j].media.WebRTC {
					m.webrtcs++
				}
			}
			v.speakers[m.vc().SSRC] = m
			m.vc().SetSpeaking(protocol.SpeakingMicrophone)
		}
	}
	time.Sleep(300 * time.Millisecond) // op 5 reaches everyone
	return nil
}

func (v *voiceRun) close() {
	for _, m := range v.members {
		m.vc().Close()
		m.gw.Close()
	}
}

// drive has every speaker talk (in spurts, when TalkOff is set) for
// Duration while every member receives, then waits up to 2 s for what is
// still in flight.
func (v *voiceRun) drive(ctx context.Context) {
	v.cpu0, v.cpuErr = clusterCPU(v.bases)
	v.latency = NewTimed()
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for _, m := range v.members {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			v.receive(m, stop)
		}()
	}
	var swg sync.WaitGroup
	v.sendStart = time.Now()
	if v.fault != nil {
		v.fault.begin(ctx, v)
	}
	for _, sp := range v.speakers {
		swg.Add(1)
		go func() {
			defer swg.Done()
			v.speak(ctx, sp)
		}()
	}
	progress := time.NewTicker(time.Second)
	go func() {
		for range progress.C {
			if v.o.Progress != nil {
				v.o.Progress(v.sent.Load(), v.received.Load())
			}
		}
	}()
	swg.Wait()
	v.sendEnd = time.Now()
	deadline := time.Now().Add(2 * time.Second)
	for v.received.Load() < v.expected.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	progress.Stop()
	close(stop)
	v.cpu1, _ = clusterCPU(v.bases)
	rwg.Wait()
	if v.fault != nil {
		v.fault.end(v)
	}
}

// receive records one member's packets until stop: latency from the
// speaker's send, and RFC 3550 jitter per stream.
func (v *voiceRun) receive(m *voiceMember, stop chan struct{}) {
	type stream struct {
		prevTransit time.Duration
		jitter      float64
		seen        bool
	}
	streams := map[uint32]*stream{}
	for {
		ssrc, seq, _, err := m.vc().ReceivePacket(v.receiveWait)
		if err != nil {
			select {
			case <-stop:
				return
			default:
				continue
			}
		}
		v.spMu.RLock()
		sp := v.speakers[ssrc]
		v.spMu.RUnlock()
		if sp == nil {
			continue
		}
		v.received.Add(1)
		m.received.Add(1)
		at := sp.log.at[seq&1023].Load()
		if v.fault != nil {
			v.fault.heard(v, m, sp, at)
		}
		if at == 0 {
			v.late.Add(1)
			continue
		}
		now := time.Now()
		transit := now.Sub(time.Unix(0, at))
		v.latency.RecordAt(now, transit)
		// RFC 3550 §6.4.1 interarrival jitter, per stream.
		st := streams[ssrc]
		if st == nil {
			st = &stream{}
			streams[ssrc] = st
		}
		if st.seen {
			d := transit - st.prevTransit
			if d < 0 {
				d = -d
			}
			st.jitter += (float64(d) - st.jitter) / 16
		}
		st.prevTransit, st.seen = transit, true
		v.jitterSum.Add(int64(st.jitter))
		v.jitterN.Add(1)
	}
}

// speak sends one speaker's Opus frames every 20 ms for Duration.
func (v *voiceRun) speak(ctx context.Context, m *voiceMember) {
	rng := mrand.New(mrand.NewPCG(uint64(m.vc().SSRC), 7))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	talking, until := true, time.Now().Add(spurt(rng, v.o.TalkOn))
	i := 0
	for time.Since(v.sendStart) < v.o.Duration && ctx.Err() == nil {
		<-tick.C
		if v.o.TalkOff > 0 && time.Now().After(until) {
			talking = !talking
			if talking {
				until = time.Now().Add(spurt(rng, v.o.TalkOn))
			} else {
				until = time.Now().Add(spurt(rng, v.o.TalkOff))
			}
		}
		if !talking {
			continue
		}
		now := time.Now().UnixNano()
		vc := m.vc()
		seq := vc.seq + 1
		m.log.at[seq&1023].Store(now)
		// A frame the speaker could not send (its connection is gone: the
		// node died or drained and no new one came) is still one its room
		// should have heard, so it counts as expected: a room that never
		// follows its move shows as loss, not as silence nobody expected.
		v.expected.Add(int64(v.o.Participants - 1))
		v.expectedWebRTC.Add(int64(m.webrtcs))
		if v.fault != nil {
			v.fault.bucket(v, now).expected.Add(int64(v.o.Participants - 1))
		}
		if _, err := vc.SendOpusSeq(v.frames[i%len(v.frames)]); err != nil {
			continue
		}
		i++
		v.sent.Add(1)
	}
}

// report turns what the run counted into its Result.
func (v *voiceRun) report() *Result {
	r := v.r
	rc := v.received.Load()
	r.Counters["participants"] = float64(len(v.members))
	r.Counters["sent_packets"] = float64(v.sent.Load())
	r.Counters["expected_packets"] = float64(v.expected.Load())
	r.Counters["received_packets"] = float64(rc)
	r.Counters["unmatched_packets"] = float64(v.late.Load())
	r.Counters["forwarded_packets_per_s"] = float64(rc) / v.sendEnd.Sub(v.sendStart).Seconds()
	if e := v.expected.Load(); e > 0 {
		r.Counters["loss_percent"] = 100 * float64(e-rc) / float64(e)
	}
	// Mixed rooms: what WebRTC and UDP receivers each got of what they
	// should have.
	if v.o.WebRTCShare > 0 {
		var n, got float64
		for _, m := range v.members {
			if m.media.WebRTC {
				n++
				got += float64(m.received.Load())
			}
		}
		r.Counters["webrtc_participants"] = n
		r.Counters["webrtc_received_packets"] = got
		if e := float64(v.expectedWebRTC.Load()); e > 0 {
			r.Counters["webrtc_loss_percent"] = 100 * (e - got) / e
		}
		if e := float64(v.expected.Load() - v.expectedWebRTC.Load()); e > 0 {
			r.Counters["udp_loss_percent"] = 100 * (e - (float64(rc) - got)) / e
		}
	}
	if jn := v.jitterN.Load(); jn > 0 {
		r.Counters["jitter_ms"] = float64(v.jitterSum.Load()) / float64(jn) / float64(time.Millisecond)
	}
	if v.cpuErr == nil && rc > 0 {
		r.Counters["server_cpu_us_per_forwarded_packet"] = float64((v.cpu1-v.cpu0)/time.Microsecond) / float64(rc)
	}
	// Per voice node (by the endpoint its participants were sent to, in
	// order of first appearance): participants and what they received.
	if len(v.bases) > 1 {
		index := map[string]int{}
		var endpoints []string
		for _, m := range v.members {
			ep := m.vc().Endpoint
			k, ok := index[ep]
			if !ok {
				k = len(endpoints)
				index[ep] = k
				endpoints = append(endpoints, ep)
			}
			p := fmt.Sprintf("voice_node%d_", k+1)
			r.Counters[p+"participants"]++
			r.Counters[p+"received_packets"] += float64(m.received.Load())
		}
		for k, ep := range endpoints {
			p := fmt.Sprintf("voice_node%d_", k+1)
			r.Counters[p+"forwarded_packets_per_s"] = r.Counters[p+"received_packets"] / v.sendEnd.Sub(v.sendStart).Seconds()
			r.Params[fmt.Sprintf("voice_node%d", k+1)] = ep
		}
	}
	if v.fault != nil {
		if err := v.fault.report(v, r); err != nil {
			r.addFailure("fault-command")
		}
	}
	r.Latency["forwarding"] = v.latency.Summarize()
	r.TimelineOf, r.Timeline = "forwarding", v.latency.Timeline()
	r.Seconds = time.Since(v.start).Seconds()
	return r
}

// spurt draws an exponentially distributed duration with the given mean.
func spurt(rng *mrand.Rand, mean time.Duration) time.Duration {
	if mean <= 0 {
		return time.Hour
	}
	return time.Duration(rng.ExpFloat64() * float64(mean))
}

// clusterCPU adds the CPU time of every node.
func clusterCPU(bases []string) (time.Duration, error) {
	var sum time.Duration
	for _, b := range bases {
		d, err := ServerCPU(b)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}
