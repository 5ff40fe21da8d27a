package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/adminapi"
	"github.com/chorus-voice/chorus/protocol"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/transport"
)

// The abuse scenario: hostile clients attack a live node while chat and
// voice run as in their own scenarios, and the report says whether every
// attack got its documented answer and whether legitimate users lost
// anything. The attacks are the ones docs/security.md lists; each runs in
// a loop on its own connections for the whole run.

// AbuseOptions configures RunAbuse.
type AbuseOptions struct {
	URL        string // HTTP base of the node
	AdminToken string
	CAFile     string // trusted for the voice gateway's wss://
	// Legitimate traffic: chat as RunChat, voice as RunVoice.
	Sessions, Guilds    int
	Rate                float64
	Rooms, Participants int
	Duration            time.Duration
	// IdentifyTimeout is the node's (default 10 s): how long the attack
	// that never identifies waits for its 4003.
	IdentifyTimeout time.Duration
	Progress        func(attacks, unexpected int64)
}

// attackPace is the least time between two attempts of one attack.
const attackPace = 50 * time.Millisecond

// attack is one kind of hostile input and the answer it must get.
type attack struct {
	name string
	want string
	// try makes one attempt and returns "" when the node answered as
	// documented, else what happened instead.
	try func(ctx context.Context) string
}

// RunAbuse runs chat, voice and every attack side by side for Duration.
func RunAbuse(ctx context.Context, o AbuseOptions) (*Result, error) {
	if o.Sessions < 2 || o.Guilds < 1 || o.Rate <= 0 || o.Rooms < 1 || o.Participants < 2 || o.Duration <= 0 {
		return nil, errors.New("loadtest: abuse needs sessions >= 2, guilds >= 1, rate > 0, rooms >= 1, participants >= 2, duration > 0")
	}
	if o.IdentifyTimeout <= 0 {
		o.IdentifyTimeout = 10 * time.Second
	}
	base := strings.TrimRight(o.URL, "/")
	before, err := ServerMetrics(base)
	if err != nil {
		return nil, fmt.Errorf("loadtest: abuse: the node does not answer: %w", err)
	}
	r := newResult("abuse", map[string]any{"url": o.URL, "sessions": o.Sessions, "guilds": o.Guilds, "rate": o.Rate,
		"rooms": o.Rooms, "participants": o.Participants, "duration_s": o.Duration.Seconds()})
	start := time.Now()
	h, err := newHostile(ctx, base, o)
	if err != nil {
		return nil, fmt.Errorf("loadtest: abuse: setting up the attacker: %w", err)
	}
	defer h.close()

	var wg sync.WaitGroup
	var chat, voice *Result
	var chatErr, voiceErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		chat, chatErr = RunChat(ctx, ChatOptions{URL: o.URL, AdminToken: o.AdminToken, Sessions: o.Sessions,
			Guilds: o.Guilds, Rate: o.Rate, Duration: o.Duration})
	}()
	go func() {
		defer wg.Done()
		voice, voiceErr = RunVoice(ctx, VoiceOptions{URL: o.URL, AdminToken: o.AdminToken, CAFile: o.CAFile,
			Rooms: o.Rooms, Participants: o.Participants, Speakers: 1, Duration: o.Duration, TalkOn: o.Duration})
	}()
	var attempts, unexpected atomic.Int64
	var mu sync.Mutex
	failures := map[string]int{}
	counts := map[string]int{}
	actx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	for _, a := range h.attacks() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Paced: the point is hostile input beside real traffic, not a
			// flood that only measures how busy two cores can get.
			tick := time.NewTicker(attackPace)
			defer tick.Stop()
			for ; actx.Err() == nil; <-tick.C {
				what := a.try(ctx)
				attempts.Add(1)
				mu.Lock()
				counts[a.name]++
				if what != "" {
					unexpected.Add(1)
					failures[a.name+": "+what]++
				}
				mu.Unlock()
				if o.Progress != nil {
					o.Progress(attempts.Load(), unexpected.Load())
				}
			}
		}()
	}
	wg.Wait()
	if chatErr != nil || voiceErr != nil {
		return nil, fmt.Errorf("loadtest: abuse: legitimate traffic failed: %w", errors.Join(chatErr, voiceErr))
	}
	after, err := ServerMetrics(base)
	r.Seconds = time.Since(start).Seconds()
	if err != nil {
		// The node is gone: the one outcome this scenario exists to rule out.
		r.Failures["node stopped answering /metrics"]++
		r.Counters["node_alive"] = 0
		return r, nil
	}
	r.Counters["node_alive"] = 1
	r.Counters["panics_recovered"] = after["chorus_panics_recovered_total"] - before["chorus_panics_recovered_total"]
	for k, v := range counts {
		r.Counters["attempts_"+k] = float64(v)
	}
	r.Counters["attacks"] = float64(attempts.Load())
	r.Counters["unexpected_answers"] = float64(unexpected.Load())
	for k, v := range failures {
		r.Failures[k] = v
	}
	for _, k := range []string{"lost", "duplicated", "delivered", "sent", "send_failed"} {
		r.Counters["chat_"+k] = chat.Counters[k]
	}
	for _, k := range []string{"lost", "loss_percent", "received_packets", "sent_packets"} {
		r.Counters["voice_"+k] = voice.Counters[k]
	}
	for k, v := range chat.Latency {
		r.Latency["chat_"+k] = v
	}
	// What the node counted for the attacks: closes by code and refusals.
	for series, v := range after {
		if strings.HasPrefix(series, "chorus_gateway_closes_total") || strings.HasPrefix(series, "chorus_connections_refused") ||
			strings.HasPrefix(series, "chorus_voice_dropped_total") ||
			strings.HasPrefix(series, "chorus_voice_udp_dropped_total") {
			if d := v - before[series]; d > 0 {
				r.Counters["node_"+strings.TrimPrefix(series, "chorus_")] = d
			}
		}
	}
	return r, nil
}

// hostile is the attacker's kit: an account of its own in a guild of its
// own with a voice channel, joined, so it knows where voice lives.
type hostile struct {
	base, token, user, guild string
	gw                       *GatewayClient
	vc                       *VoiceClient
	dialer, voiceDialer      *websocket.Dialer
	hc                       *http.Client
	identifyTimeout          time.Duration
}

func newHostile(ctx context.Context, base string, o AbuseOptions) (*hostile, error) {
	ad := adminapi.New(base, o.AdminToken)
	var tag [4]byte
	rand.Read(tag[:])
	var u struct {
		User  struct{ ID string } `json:"user"`
		Token string              `json:"token"`
	}
	if err := ad.Do("POST", "/admin/v1/users", map[string]any{"username": "abuser" + hex.EncodeToString(tag[:])}, &u); err != nil {
		return nil, err
	}
	var g, ch struct{ ID string }
	if err := ad.Do("POST", "/admin/v1/guilds", map[string]any{"name": "abuse", "owner_id": u.User.ID}, &g); err != nil {
		return nil, err
	}
	if err := ad.Do("POST", "/admin/v1/guilds/"+g.ID+"/channels", map[string]any{"name": "lair", "type": 2}, &ch); err != nil {
		return nil, err
	}
	vd, err := voiceDialer(o.CAFile)
	if err != nil {
		return nil, err
	}
	h := &hostile{base: base, token: u.Token, user: u.User.ID, guild: g.ID, voiceDialer: vd,
		dialer: &websocket.Dialer{HandshakeTimeout: 10 * time.Second}, hc: &http.Client{Timeout: 30 * time.Second},
		identifyTimeout: o.IdentifyTimeout}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if h.gw, err = DialGateway(cctx, h.dialer, wsURL(base), u.Token, 1); err != nil {
		return nil, err
	}
	if h.vc, err = JoinVoice(cctx, h.gw, vd, g.ID, ch.ID, u.User.ID, crypto.AES256GCMRTPSize); err != nil {
		h.gw.Close()
		return nil, err
	}
	h.gw.Discard.Store(true)
	return h, nil
}

func (h *hostile) close() {
	h.vc.Close()
	h.gw.Close()
}

// attacks lists the attacks; docs/security.md has the same list.
func (h *hostile) attacks() []attack {
	gw := wsURL(h.base) + "/?v=10&encoding=json"
	voice := "wss://" + h.vc.Endpoint + "/?v=8"
	return []attack{
		{"close-status-0", "close 1002", func(ctx context.Context) string {
			return h.wsAttack(ctx, gw, protocol.CloseProtocol, func(ws *websocket.Conn) error {
				return ws.WriteControl(websocket.CloseMessage, []byte{0, 0}, time.Now().Add(time.Second))
			})
		}},
		{"text-not-utf8", "close 1007", func(ctx context.Context) string {
			return h.wsAttack(ctx, gw, protocol.CloseInvalidData, func(ws *websocket.Conn) error {
				return ws.WriteMessage(websocket.TextMessage, []byte("{\"op\":1,\"d\":\"\xff\"}"))
			})
		}},
		{"oversized-payload", "close 4002", func(ctx context.Context) string {
			return h.wsAttack(ctx, gw, protocol.CloseDecodeError, func(ws *websocket.Conn) error {
				return ws.WriteMessage(websocket.TextMessage, []byte(`{"op":`+strconv.Itoa(protocol.OpHeartbeat)+`,"d":"`+strings.Repeat("a", 2*protocol.MaxPayload)+`"}`))
			})
		}},
		{"forged-token", "close 4004", func(ctx context.Context) string {
			return h.wsAttack(ctx, gw, protocol.CloseAuthenticationFailed, func(ws *websocket.Conn) error {
				return ws.WriteJSON(map[string]any{"op": protocol.OpIdentify, "d": map[string]any{"token": h.token[:len(h.token)-4] + "AAAA",
					"intents": 1, "properties": map[string]string{"os": "linux"}}})
			})
		}},
		{"never-identify", "close 4003", func(ctx context.Context) string {
			return h.wsAttack(ctx, gw, protocol.CloseNotAuthenticated, func(*websocket.Conn) error { return nil })
		}},
		{"voice-payload-flood", "close 4021", func(ctx context.Context) string {
			return h.wsAttackWith(ctx, h.voiceDialer, voice, protocol.VoiceCloseRateLimited, func(ws *websocket.Conn) error {
				for i := range 200 {
					if err := ws.WriteJSON(map[string]any{"op": protocol.VoiceHeartbeat, "d": map[string]any{"t": i, "seq_ack": -1}}); err != nil {
						return nil // closed mid-flood: the read below says how
					}
				}
				return nil
			})
		}},
		{"rest-oversized-body", "HTTP 413", func(ctx context.Context) string {
			body := `{"content":"` + strings.Repeat("a", 2<<20) + `"}`
			return h.rest(ctx, "POST", "/api/v10/channels/1/messages", body, http.StatusRequestEntityTooLarge)
		}},
		{"rest-long-nick", "HTTP 400", func(ctx context.Context) string {
			body := `{"nick":"` + strings.Repeat("n", 10000) + `"}`
			return h.rest(ctx, "PATCH", "/api/v10/guilds/"+h.guild+"/members/@me", body, http.StatusBadRequest)
		}},
		{"udp-discovery-scan", "no answer", func(ctx context.Context) string {
			return h.udpAttack(func(c *net.UDPConn) {
				for range 50 {
					var b [4]byte
					rand.Read(b[:])
					c.Write(discoveryRequest(binary.BigEndian.Uint32(b[:])))
				}
			})
		}},
		{"udp-discovery-hijack", "no answer", func(ctx context.Context) string {
			return h.udpAttack(func(c *net.UDPConn) { c.Write(discoveryRequest(h.vc.SSRC)) })
		}},
		{"udp-keepalive-stranger", "no echo", func(ctx context.Context) string {
			return h.udpAttack(func(c *net.UDPConn) { c.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0}) })
		}},
	}
}

// wsAttack dials the main gateway, reads Hello, does act and expects the
// server to close with code.
func (h *hostile) wsAttack(ctx context.Context, url string, code protocol.CloseCode, act func(*websocket.Conn) error) string {
	return h.wsAttackWith(ctx, h.dialer, url, code, act)
}

func (h *hostile) wsAttackWith(ctx context.Context, d *websocket.Dialer, url string, code protocol.CloseCode, act func(*websocket.Conn) error) string {
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return "dial: " + failureKey(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(h.identifyTimeout + 5*time.Second))
	if _, _, err := ws.ReadMessage(); err != nil {
		return "no Hello: " + failureKey(err)
	}
	if err := act(ws); err != nil {
		return "send: " + err.Error()
	}
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if got := failureKey(err); got != fmt.Sprintf("close-%d", code) {
				return got
			}
			return ""
		}
	}
}

// rest sends body and expects status.
func (h *hostile) rest(ctx context.Context, method, path, body string, status int) string {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, strings.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bot "+h.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.hc.Do(req)
	if err != nil {
		return "request: " + err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != status {
		return fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	return ""
}

// udpAttack sends from a fresh socket and expects no datagram back.
func (h *hostile) udpAttack(send func(*net.UDPConn)) string {
	c, err := net.DialUDP("udp", nil, h.vc.UDP.RemoteAddr().(*net.UDPAddr))
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	send(c)
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, transport.MaxDatagram)
	if n, err := c.Read(buf); err == nil {
		return fmt.Sprintf("answered with %d bytes", n)
	}
	return ""
}

func discoveryRequest(ssrc uint32) []byte {
	b := make([]byte, transport.DiscoverySize)
	binary.BigEndian.PutUint16(b, 1)
	binary.BigEndian.PutUint16(b[2:], 70)
	binary.BigEndian.PutUint32(b[4:], ssrc)
	return b
}

// AttackNames lists the attacks RunAbuse runs, for help text and docs.
func AttackNames() []string {
	h := &hostile{vc: &VoiceClient{}}
	var out []string
	for _, a := range h.attacks() {
		out = append(out, a.name+" ("+a.want+")")
	}
	sort.Strings(out)
	return out
}
