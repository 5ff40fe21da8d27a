package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/transport"
)

// voiceFixture is a node with TLS and voice on loopback ports.
func voiceFixture(t *testing.T) (*fixture, *x509.CertPool) {
	t.Helper()
	cfg := testConfig(t)
	cfg.HTTPSAddr, cfg.VoiceAddr = "127.0.0.1:0", "127.0.0.1:0"
	f := startConfig(t, cfg)
	pem, _ := os.ReadFile(f.node.CAPath)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return f, pool
}

// voiceClient is a minimal voice client: voice websocket plus UDP socket.
type voiceClient struct {
	t      *testing.T
	user   string
	ws     *websocket.Conn
	frames chan map[string]json.RawMessage
	udp    *net.UDPConn
	ssrc   uint32
	server netip.AddrPort
	cipher *crypto.Cipher
	n      uint32
	err    error // why the websocket ended, once frames is closed
}

// joinVoice has the gateway client join the Lounge, connects to the voice
// gateway it is sent to and completes the handshake with mode.
// voiceServer has the gateway client join the Lounge and returns what
// VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE gave it.
type voiceServer struct{ SessionID, Token, Endpoint string }

func joinLounge(t *testing.T, f *fixture, gw *client, user string) voiceServer {
	t.Helper()
	gw.send(map[string]any{"op": 4, "d": map[string]any{"guild_id": f.demo.GuildID.String(), "channel_id": f.demo.Lounge.String(),
		"self_mute": false, "self_deaf": false}})
	// VOICE_STATE_UPDATE for ourselves must come before VOICE_SERVER_UPDATE (clients.md §3).
	var sessionID string
	for sessionID == "" {
		fr := gw.next(5 * time.Second)
		if fr.name() == "VOICE_SERVER_UPDATE" {
			t.Fatal("VOICE_SERVER_UPDATE before our VOICE_STATE_UPDATE")
		}
		if fr.name() == "VOICE_STATE_UPDATE" {
			var vs struct {
				UserID    string `json:"user_id"`
				SessionID string `json:"session_id"`
				Member    *struct {
					JoinedAt string `json:"joined_at"`
				} `json:"member"`
			}
			json.Unmarshal(fr.D, &vs)
			if vs.UserID == user {
				if vs.Member == nil || vs.Member.JoinedAt == "" {
					t.Fatalf("VOICE_STATE_UPDATE without member (clients.md §4): %s", fr.D)
				}
				sessionID = vs.SessionID
			}
		}
	}
	var vsu struct {
		Token, GuildID, Endpoint string
	}
	fr := gw.waitFor("VOICE_SERVER_UPDATE")
	json.Unmarshal(fr.D, &vsu)
	if vsu.Endpoint != f.node.VoiceAddr || vsu.Token == "" {
		t.Fatalf("VOICE_SERVER_UPDATE %s", fr.D)
	}
	return voiceServer{SessionID: sessionID, Token: vsu.Token, Endpoint: vsu.Endpoint}
}

// identifyVoice has the gateway client join the Lounge, connects to the
// voice gateway it is sent to and identifies: the client has its Ready.
func identifyVoice(t *testing.T, f *fixture, pool *x509.CertPool, gw *client, user string) *voiceClient {
	t.Helper()
	vs := joinLounge(t, f, gw, user)
	sessionID := vs.SessionID
	vsu := vs
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	ws, _, err := d.Dial("wss://"+vsu.Endpoint+"/?v=8", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	vc := &voiceClient{t: t, user: user, ws: ws, frames: make(chan map[string]json.RawMessage, 256)}
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				vc.err = err
				close(vc.frames)
				return
			}
			var m map[string]json.RawMessage
			json.Unmarshal(b, &m)
			vc.frames <- m
		}
	}()
	if op := vc.nextOp(); op != 8 {
		t.Fatalf("voice hello op %d", op)
	}
	ws.WriteJSON(map[string]any{"op": 0, "d": map[string]any{"server_id": f.demo.GuildID.String(), "user_id": user,
		"session_id": sessionID, "token": vsu.Token, "max_dave_protocol_version": 1}})
	ready := vc.wait(2)
	var r struct {
		SSRC      uint32   `json:"ssrc"`
		IP        string   `json:"ip"`
		Port      uint16   `json:"port"`
		Modes     []string `json:"modes"`
		Heartbeat int      `json:"heartbeat_interval"`
	}
	json.Unmarshal(ready, &r)
	if r.Modes[0] != "aead_aes256_gcm_rtpsize" || r.Modes[1] != "aead_xchacha20_poly1305_rtpsize" || r.Heartbeat == 0 {
		t.Fatalf("voice Ready %s", ready)
	}
	vc.ssrc = r.SSRC
	vc.server = netip.AddrPortFrom(netip.MustParseAddr(r.IP), r.Port)
	return vc
}

func joinVoice(t *testing.T, f *fixture, pool *x509.CertPool, gw *client, user string, mode crypto.Mode) *voiceClient {
	t.Helper()
	vc := identifyVoice(t, f, pool, gw, user)
	var err error
	vc.udp, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(vc.server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vc.udp.Close() })
	// IP discovery (voice.md §9.1).
	req := make([]byte, 74)
	binary.BigEndian.PutUint16(req, 1)
	binary.BigEndian.PutUint16(req[2:], 70)
	binary.BigEndian.PutUint32(req[4:], vc.ssrc)
	vc.udp.Write(req)
	resp := make([]byte, 100)
	vc.udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := vc.udp.Read(resp)
	if err != nil || n != 74 || resp[1] != 2 {
		t.Fatalf("IP discovery answer %d bytes %v", n, err)
	}
	local := vc.udp.LocalAddr().(*net.UDPAddr)
	if port := binary.BigEndian.Uint16(resp[72:]); int(port) != local.Port {
		t.Fatalf("discovered port %d, ours %d", port, local.Port)
	}
	vc.ws.WriteJSON(map[string]any{"op": 1, "d": map[string]any{"protocol": "udp",
		"data": map[string]any{"address": "10.9.9.9", "port": 1, "mode": mode.String()}}}) // a wrong claim on purpose
	sd := vc.wait(4)
	var desc struct {
		Mode string `json:"mode"`
		Key  []byte `json:"-"`
		Raw  []int  `json:"secret_key"`
		DAVE *int   `json:"dave_protocol_version"`
	}
	json.Unmarshal(sd, &desc)
	if desc.Mode != mode.String() || len(desc.Raw) != 32 || desc.DAVE == nil || *desc.DAVE != 0 {
		t.Fatalf("session description %s", sd)
	}
	key := make([]byte, 32)
	for i, v := range desc.Raw {
		key[i] = byte(v)
	}
	vc.cipher, _ = crypto.NewCipher(mode, key)
	return vc
}

// expectClose waits until the voice websocket is closed with code.
func (vc *voiceClient) expectClose(code int) {
	vc.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-vc.frames:
			if !ok {
				if !websocket.IsCloseError(vc.err, code) {
					vc.t.Fatalf("voice closed with %v, want %d", vc.err, code)
				}
				return
			}
		case <-deadline:
			vc.t.Fatalf("voice not closed; want %d", code)
		}
	}
}

func (vc *voiceClient) nextOp() int {
	vc.t.Helper()
	select {
	case m, ok := <-vc.frames:
		if !ok {
			vc.t.Fatal("voice websocket closed")
		}
		var op int
		json.Unmarshal(m["op"], &op)
		return op
	case <-time.After(5 * time.Second):
		vc.t.Fatal("no voice frame")
	}
	return -1
}

// wait returns the d of the next frame with op, skipping others.
func (vc *voiceClient) wait(op int) json.RawMessage {
	vc.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-vc.frames:
			if !ok {
				vc.t.Fatalf("voice websocket closed waiting for op %d", op)
			}
			var got int
			json.Unmarshal(m["op"], &got)
			if got == op {
				return m["d"]
			}
		case <-deadline:
			vc.t.Fatalf("no voice op %d", op)
		}
	}
}

// sendAudio seals and sends one Opus frame.
func (vc *voiceClient) sendAudio(payload []byte) {
	vc.n++
	pkt := []byte{0x80, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(pkt[2:], uint16(vc.n))
	binary.BigEndian.PutUint32(pkt[4:], vc.n*960)
	binary.BigEndian.PutUint32(pkt[8:], vc.ssrc)
	pkt = append(pkt, payload...)
	nonce := make([]byte, vc.cipher.Mode().NonceSize())
	if len(nonce) >= 4 {
		binary.BigEndian.PutUint32(nonce, vc.n)
	}
	out, err := vc.cipher.Seal(nil, pkt, nonce)
	if err != nil {
		vc.t.Fatal(err)
	}
	vc.udp.Write(out)
}

// receive returns the next decrypted RTP packet, or nil after timeout.
func (vc *voiceClient) receive(timeout time.Duration) []byte {
	buf := make([]byte, 1500)
	for {
		vc.udp.SetReadDeadline(time.Now().Add(timeout))
		n, err := vc.udp.Read(buf)
		if err != nil {
			return nil
		}
		if transport.Classify(buf[:n]) != transport.KindRTP {
			continue
		}
		plain, _, err := vc.cipher.Open(nil, buf[:n])
		if err != nil {
			vc.t.Fatalf("received a packet we cannot open: %v", err)
		}
		return plain
	}
}

// inLounge is alice and bob, each with a gateway session and a voice
// connection to the Lounge.
type inLounge struct {
	aliceGW, bobGW *client
	alice, bob     *voiceClient
}

// joinLounge2 connects alice and bob and joins both to the Lounge, alice
// in aliceMode and bob in bobMode.
func joinLounge2(t *testing.T, f *fixture, pool *x509.CertPool, aliceMode, bobMode crypto.Mode) inLounge {
	t.Helper()
	var l inLounge
	l.aliceGW = f.dial("v=10")
	l.aliceGW.ready(f.demo.AliceToken, allIntents)
	l.aliceGW.waitFor("GUILD_CREATE")
	l.bobGW = f.dial("v=10")
	l.bobGW.ready(f.demo.BobToken, allIntents)
	l.bobGW.waitFor("GUILD_CREATE")
	l.alice = joinVoice(t, f, pool, l.aliceGW, f.demo.Alice.ID.String(), aliceMode)
	l.bob = joinVoice(t, f, pool, l.bobGW, f.demo.Bob.ID.String(), bobMode)
	return l
}

func TestVoiceEndToEnd(t *testing.T) {
	f, pool := voiceFixture(t)
	l := joinLounge2(t, f, pool, crypto.AES256GCMRTPSize, crypto.XChaCha20Poly1305RTPSize)
	alice, bob := l.alice, l.bob

	// Alice announces her SSRC; bob hears whose it is before any audio.
	alice.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "delay": 0, "ssrc": alice.ssrc}})
	var sp struct {
		UserID string `json:"user_id"`
		SSRC   uint32 `json:"ssrc"`
	}
	json.Unmarshal(bob.wait(5), &sp)
	if sp.UserID != f.demo.Alice.ID.String() || sp.SSRC != alice.ssrc {
		t.Fatalf("speaking %+v", sp)
	}
	for i := 0; i < 20; i++ {
		payload := []byte(fmt.Sprintf("opus frame %02d", i))
		alice.sendAudio(payload)
		got := bob.receive(5 * time.Second)
		if got == nil {
			t.Fatalf("frame %d not forwarded", i)
		}
		h, _ := transport.ParseRTP(got)
		if h.SSRC != alice.ssrc || string(got[h.Len:]) != string(payload) || h.PayloadType != 120 {
			t.Fatalf("frame %d: ssrc %x payload %q", i, h.SSRC, got[h.Len:])
		}
	}
	// The UDP address was latched from the packets, not from Select
	// Protocol's claim of 10.9.9.9:1 (clients.md §11): bob received them.

	drops := &f.node.SFU().Drops
	// Bad input: each dropped, counted, never forwarded; the stream goes on.
	before := drops.Auth.Load()
	wrong, _ := crypto.NewCipher(crypto.AES256GCMRTPSize, make([]byte, 32))
	pkt := []byte{0x80, 0x78, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(pkt[8:], alice.ssrc)
	forged, _ := wrong.Seal(nil, append(pkt, 1, 2, 3), []byte{0, 0, 9, 9})
	alice.udp.Write(forged)
	unknown := append([]byte{}, forged...)
	binary.BigEndian.PutUint32(unknown[8:], alice.ssrc+1)
	alice.udp.Write(unknown)
	alice.udp.Write([]byte{0x80, 0x78, 1}) // truncated
	// Alice's SSRC from bob's address: her address is latched.
	stolen := append([]byte{}, forged...)
	bob.udp.Write(stolen)
	// IP discovery for an SSRC nobody was given: no answer.
	req := make([]byte, 74)
	binary.BigEndian.PutUint16(req, 1)
	binary.BigEndian.PutUint16(req[2:], 70)
	binary.BigEndian.PutUint32(req[4:], alice.ssrc^0xFFFF)
	bob.udp.Write(req)
	if bob.receive(300*time.Millisecond) != nil {
		t.Fatal("bad packets were forwarded")
	}
	udp := &f.node.UDP().Stats
	waitCount(t, func() bool {
		return drops.Auth.Load() > before && drops.UnknownSSRC.Load() > 0 && drops.Address.Load() > 0 &&
			udp.DroppedUnknown.Load() > 0 && udp.DroppedDiscovery.Load() > 0
	})

	// Server mute (the bot is a Moderator): alice's audio stops reaching bob.
	var m map[string]any
	mute := func(on bool) {
		resp := f.rest("PATCH", fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Alice.ID), f.demo.BotToken,
			map[string]any{"mute": on}, &m)
		if resp.StatusCode != 200 {
			t.Fatalf("PATCH member: %d %v", resp.StatusCode, m)
		}
	}
	mute(true)
	alice.sendAudio([]byte("muted"))
	if got := bob.receive(300 * time.Millisecond); got != nil {
		t.Fatal("server-muted audio forwarded")
	}
	mute(false)
	alice.sendAudio([]byte("unmuted"))
	if got := bob.receive(5 * time.Second); got == nil {
		t.Fatal("audio after unmute not forwarded")
	}
	// Bob (no MUTE_MEMBERS) may not mute anyone.
	if r := f.rest("PATCH", fmt.Sprintf("/api/v10/guilds/%s/members/%s", f.demo.GuildID, f.demo.Alice.ID), f.demo.BobToken,
		map[string]any{"mute": true}, &m); r.StatusCode != 403 {
		t.Fatalf("mute without permission: %d", r.StatusCode)
	}
}

func waitCount(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("counter did not move")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
