package loadtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/adminapi"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
)

// VoiceOptions configures the voice scenario.
type VoiceOptions struct {
	URL        string // HTTP base of the node
	AdminToken string
	// CAFile is the PEM file to trust for the voice gateway's TLS (the
	// development CA); empty uses the system roots.
	CAFile       string
	Rooms        int
	Participants int // per room
	Speakers     int // per room, the first participants
	// Modes are used round robin over participants; default AES-GCM.
	Modes    []crypto.Mode
	Duration time.Duration
	// TalkOn and TalkOff are the mean lengths of talk spurts and pauses
	// (exponentially distributed); TalkOff 0 means speakers never pause.
	TalkOn, TalkOff time.Duration
	Progress        func(sent, received int64)
	// Route, if set, sends every client's media to Route(server) instead:
	// a proxy that injects loss or delay.
	Route func(netip.AddrPort) netip.AddrPort
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
	if len(o.Modes) == 0 {
		o.Modes = []crypto.Mode{crypto.AES256GCMRTPSize}
	}
	frames, err := OpusFrames("a")
	if err != nil {
		return nil, err
	}
	base := strings.TrimRight(o.URL, "/")
	dialer, err := voiceDialer(o.CAFile)
	if err != nil {
		return nil, err
	}
	ad := adminapi.New(base, o.AdminToken)
	r := newResult("voice", map[string]any{"url": o.URL, "rooms": o.Rooms, "participants": o.Participants,
		"speakers": o.Speakers, "duration_s": o.Duration.Seconds(), "talk_on_s": o.TalkOn.Seconds(), "talk_off_s": o.TalkOff.Seconds()})
	start := time.Now()

	// One guild, one voice channel per room, one user per participant.
	var run [4]byte
	rand.Read(run[:])
	type member struct {
		id, token string
		vc        *VoiceClient
		gw        *GatewayClient
		log       *sendLog
	}
	n := o.Rooms * o.Participants
	members := make([]*member, n)
	for i := range members {
		var u struct {
			User  struct{ ID string } `json:"user"`
			Token string              `json:"token"`
		}
		if err := ad.Do("POST", "/admin/v1/users", map[string]any{"username": fmt.Sprintf("lv%s%05d", hex.EncodeToString(run[:]), i)}, &u); err != nil {
			return nil, err
		}
		members[i] = &member{id: u.User.ID, token: u.Token}
	}
	var g struct{ ID string }
	if err := ad.Do("POST", "/admin/v1/guilds", map[string]any{"name": "voice load", "owner_id": members[0].id}, &g); err != nil {
		return nil, err
	}
	for _, m := range members[1:] {
		if err := ad.Do("PUT", "/admin/v1/guilds/"+g.ID+"/members/"+m.id, map[string]any{}, nil); err != nil {
			return nil, err
		}
	}
	channels := make([]string, o.Rooms)
	for i := range channels {
		var ch struct{ ID string }
		if err := ad.Do("POST", "/admin/v1/guilds/"+g.ID+"/channels", map[string]any{"name": fmt.Sprintf("room %d", i), "type": 2}, &ch); err != nil {
			return nil, err
		}
		channels[i] = ch.ID
	}
	// Connect everyone, a few at a time.
	ds := dialers(base)
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int, m *member) {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			gw, err := DialGateway(cctx, ds[i%len(ds)], wsURL(base), m.token, 1)
			if err != nil {
				errs <- err
				return
			}
			m.gw = gw
			vc, err := JoinVoiceVia(cctx, gw, dialer, g.ID, channels[i/o.Participants], m.id, o.Modes[i%len(o.Modes)], o.Route)
			if err != nil {
				errs <- err
				return
			}
			gw.Discard.Store(true)
			m.vc = vc
		}(i, m)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		for _, m := range members {
			if m.vc != nil {
				m.vc.Close()
			}
			if m.gw != nil {
				m.gw.Close()
			}
		}
		return nil, fmt.Errorf("loadtest: voice setup: %w", err)
	}
	defer func() {
		for _, m := range members {
			m.vc.Close()
			m.gw.Close()
		}
	}()
	speakers := map[uint32]*member{}
	for room := 0; room < o.Rooms; room++ {
		for s := 0; s < o.Speakers; s++ {
			m := members[room*o.Participants+s]
			m.log = &sendLog{}
			speakers[m.vc.SSRC] = m
			m.vc.SetSpeaking(1)
		}
	}
	time.Sleep(300 * time.Millisecond) // op 5 reaches everyone

	cpu0, cpuErr := ServerCPU(base)
	latency := NewTimed()
	var sent, expected, received, late atomic.Int64
	var jitterSum, jitterN atomic.Int64
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for _, m := range members {
		rwg.Add(1)
		go func(m *member) {
			defer rwg.Done()
			type stream struct {
				prevTransit time.Duration
				jitter      float64
				seen        bool
			}
			streams := map[uint32]*stream{}
			for {
				ssrc, seq, _, err := m.vc.ReceivePacket(time.Second)
				if err != nil {
					select {
					case <-stop:
						return
					default:
						continue
					}
				}
				sp := speakers[ssrc]
				if sp == nil {
					continue
				}
				received.Add(1)
				at := sp.log.at[seq&1023].Load()
				if at == 0 {
					late.Add(1)
					continue
				}
				now := time.Now()
				transit := now.Sub(time.Unix(0, at))
				latency.RecordAt(now, transit)
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
				jitterSum.Add(int64(st.jitter))
				jitterN.Add(1)
			}
		}(m)
	}
	var swg sync.WaitGroup
	sendStart := time.Now()
	for _, sp := range speakers {
		swg.Add(1)
		go func(m *member) {
			defer swg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(m.vc.SSRC), 7))
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			talking, until := true, time.Now().Add(spurt(rng, o.TalkOn))
			i := 0
			for time.Since(sendStart) < o.Duration && ctx.Err() == nil {
				<-tick.C
				if o.TalkOff > 0 && time.Now().After(until) {
					talking = !talking
					if talking {
						until = time.Now().Add(spurt(rng, o.TalkOn))
					} else {
						until = time.Now().Add(spurt(rng, o.TalkOff))
					}
				}
				if !talking {
					continue
				}
				now := time.Now().UnixNano()
				seq := m.vc.seq + 1
				m.log.at[seq&1023].Store(now)
				if _, err := m.vc.SendOpusSeq(frames[i%len(frames)]); err != nil {
					continue
				}
				i++
				sent.Add(1)
				expected.Add(int64(o.Participants - 1))
			}
		}(sp)
	}
	progress := time.NewTicker(time.Second)
	go func() {
		for range progress.C {
			if o.Progress != nil {
				o.Progress(sent.Load(), received.Load())
			}
		}
	}()
	swg.Wait()
	sendTime := time.Since(sendStart)
	deadline := time.Now().Add(2 * time.Second)
	for received.Load() < expected.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	progress.Stop()
	close(stop)
	cpu1, _ := ServerCPU(base)
	rwg.Wait()

	rc := received.Load()
	r.Counters["participants"] = float64(n)
	r.Counters["sent_packets"] = float64(sent.Load())
	r.Counters["expected_packets"] = float64(expected.Load())
	r.Counters["received_packets"] = float64(rc)
	r.Counters["unmatched_packets"] = float64(late.Load())
	r.Counters["forwarded_packets_per_s"] = float64(rc) / sendTime.Seconds()
	if e := expected.Load(); e > 0 {
		r.Counters["loss_percent"] = 100 * float64(e-rc) / float64(e)
	}
	if jn := jitterN.Load(); jn > 0 {
		r.Counters["jitter_ms"] = float64(jitterSum.Load()) / float64(jn) / float64(time.Millisecond)
	}
	if cpuErr == nil && rc > 0 {
		r.Counters["server_cpu_us_per_forwarded_packet"] = float64((cpu1-cpu0)/time.Microsecond) / float64(rc)
	}
	r.Latency["forwarding"] = latency.Summarize()
	r.TimelineOf, r.Timeline = "forwarding", latency.Timeline()
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

// spurt draws an exponentially distributed duration with the given mean.
func spurt(rng *mrand.Rand, mean time.Duration) time.Duration {
	if mean <= 0 {
		return time.Hour
	}
	return time.Duration(rng.ExpFloat64() * float64(mean))
}
