package loadtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtp"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/rtc"
	"github.com/chorus-voice/chorus/transport"
)

// Media is how a VoiceClient sends and receives its audio: the UDP
// transport encrypted in Mode (what native clients and bots use), or,
// with WebRTC, DTLS-SRTP as a browser does.
type Media struct {
	Mode   crypto.Mode
	WebRTC bool
	// Route, if set, sends UDP media to Route(server) instead of the
	// server's address, for a proxy that injects loss in tests.
	Route func(netip.AddrPort) netip.AddrPort
}

// VoiceClient is a voice connection of our own: voice gateway plus UDP,
// in any encryption mode, including the xsalsa20 family no library we
// test with still selects.
type VoiceClient struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	UDP  *net.UDPConn
	SSRC uint32
	// Endpoint is the voice gateway's host:port (VOICE_SERVER_UPDATE), and
	// Session the gateway session the voice state belongs to.
	Endpoint, Session string
	cipher            *crypto.Cipher
	// Speaking maps other users' SSRCs to their user ids (voice op 5).
	mu       sync.Mutex
	speakers map[uint32]string
	counter  uint32
	seq      uint16
	ts       uint32
	readBuf  []byte
	plain    []byte

	// WebRTC media (voice_webrtc.go); nil for UDP.
	rtc      *rtc.Client
	rtcIn    chan rtcPacket
	rtcTimer *time.Timer
	rtpOut   rtp.Packet
}

// JoinVoice sends op 4 for channel on gw, follows VOICE_SERVER_UPDATE to
// the voice gateway (dialled with d, which must trust its certificate),
// and completes Identify, IP discovery and Select Protocol with mode.
func JoinVoice(ctx context.Context, gw *GatewayClient, d *websocket.Dialer, guild, channel, user string, mode crypto.Mode) (*VoiceClient, error) {
	return JoinVoiceWith(ctx, gw, d, guild, channel, user, Media{Mode: mode})
}

// JoinVoiceWith is JoinVoice with the media described by m.
func JoinVoiceWith(ctx context.Context, gw *GatewayClient, d *websocket.Dialer, guild, channel, user string, m Media) (*VoiceClient, error) {
	if err := gw.Send(protocol.OpVoiceState, map[string]any{"guild_id": guild, "channel_id": channel, "self_mute": false, "self_deaf": false}); err != nil {
		return nil, err
	}
	var session, token, endpoint string
	for token == "" {
		var ev Dispatch
		select {
		case e, ok := <-gw.Events:
			if !ok {
				return nil, errors.New("loadtest: gateway closed during voice join")
			}
			ev = e
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		switch ev.T {
		case protocol.EventVoiceStateUpdate:
			var v struct {
				UserID    string `json:"user_id"`
				SessionID string `json:"session_id"`
			}
			json.Unmarshal(ev.D, &v)
			if v.UserID == user {
				session = v.SessionID
			}
		case protocol.EventVoiceServerUpdate:
			var v struct{ Token, Endpoint string }
			json.Unmarshal(ev.D, &v)
			token, endpoint = v.Token, v.Endpoint
		}
	}
	if session == "" {
		return nil, errors.New("loadtest: VOICE_SERVER_UPDATE before our VOICE_STATE_UPDATE")
	}
	return connectVoice(ctx, d, endpoint, guild, user, session, token, m)
}

// FollowVoiceServer waits on gw for the next VOICE_SERVER_UPDATE (the
// room moved to another node) and connects there as the same voice
// session, as client libraries do.
func FollowVoiceServer(ctx context.Context, gw *GatewayClient, d *websocket.Dialer, guild, user, session string, mode crypto.Mode) (*VoiceClient, error) {
	return FollowVoiceServerWith(ctx, gw, d, guild, user, session, Media{Mode: mode})
}

// FollowVoiceServerWith is FollowVoiceServer with the media described by m.
func FollowVoiceServerWith(ctx context.Context, gw *GatewayClient, d *websocket.Dialer, guild, user, session string, m Media) (*VoiceClient, error) {
	ev, err := gw.Next(ctx, protocol.EventVoiceServerUpdate)
	if err != nil {
		return nil, err
	}
	var v struct{ Token, Endpoint string }
	json.Unmarshal(ev.D, &v)
	return connectVoice(ctx, d, v.Endpoint, guild, user, session, v.Token, m)
}

// connectVoice opens a voice connection at endpoint: Identify, then IP
// discovery and Select Protocol in m.Mode, or WebRTC.
func connectVoice(ctx context.Context, d *websocket.Dialer, endpoint, guild, user, session, token string, m Media) (*VoiceClient, error) {
	mode, route := m.Mode, m.Route
	ws, _, err := d.DialContext(ctx, "wss://"+endpoint+"/?v=8", nil)
	if err != nil {
		return nil, err
	}
	vc := &VoiceClient{ws: ws, Endpoint: endpoint, Session: session, speakers: map[uint32]string{}, readBuf: make([]byte, transport.MaxDatagram)}
	if _, err := vc.wait(protocol.VoiceHello); err != nil {
		ws.Close()
		return nil, err
	}
	vc.send(protocol.VoiceIdentify, map[string]any{"server_id": guild, "user_id": user, "session_id": session, "token": token})
	raw, err := vc.wait(protocol.VoiceReady)
	if err != nil {
		ws.Close()
		return nil, err
	}
	var ready protocol.VoiceReadyData
	json.Unmarshal(raw, &ready)
	vc.SSRC = ready.SSRC
	if m.WebRTC {
		if err := vc.connectWebRTC(ctx); err != nil {
			vc.Close()
			return nil, err
		}
		go vc.readGateway()
		return vc, nil
	}
	server, err := netip.ParseAddrPort(fmt.Sprintf("%s:%d", ready.IP, ready.Port))
	if err != nil {
		ws.Close()
		return nil, err
	}
	if route != nil {
		server = route(server)
	}
	if vc.UDP, err = net.DialUDP("udp4", udpLocal(server), net.UDPAddrFromAddrPort(server)); err != nil {
		ws.Close()
		return nil, err
	}
	// IP discovery (voice.md §9.1), also what tells the server where a
	// listening-only client receives.
	vc.UDP.Write(discoveryRequest(vc.SSRC))
	vc.UDP.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := vc.UDP.Read(vc.readBuf)
	if err != nil || n != transport.DiscoverySize {
		vc.Close()
		return nil, fmt.Errorf("loadtest: IP discovery: %d bytes, %v", n, err)
	}
	// Select Protocol names what discovery answered, as libraries do: the
	// server sends a listening-only client media only once it confirmed
	// the discovered address this way.
	ip, _, _ := bytes.Cut(vc.readBuf[8:72], []byte{0})
	var sel protocol.SelectProtocolData
	sel.Protocol, sel.Data.Address, sel.Data.Mode = "udp", string(ip), mode.String()
	sel.Data.Port = int(binary.BigEndian.Uint16(vc.readBuf[72:]))
	vc.send(protocol.VoiceSelectProtocol, sel)
	raw, err = vc.wait(protocol.VoiceSessionDescription)
	if err != nil {
		vc.Close()
		return nil, err
	}
	var desc protocol.SessionDescriptionData
	if err := json.Unmarshal(raw, &desc); err != nil {
		vc.Close()
		return nil, fmt.Errorf("loadtest: session description: %w", err)
	}
	if vc.cipher, err = crypto.NewCipher(mode, desc.SecretKey[:]); err != nil {
		vc.Close()
		return nil, err
	}
	go vc.readGateway()
	return vc, nil
}

func (vc *VoiceClient) send(op int, d any) error {
	vc.wmu.Lock()
	defer vc.wmu.Unlock()
	return vc.ws.WriteJSON(map[string]any{"op": op, "d": d})
}

// wait reads voice frames until op arrives (before readGateway runs).
func (vc *VoiceClient) wait(op int) (json.RawMessage, error) {
	vc.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer vc.ws.SetReadDeadline(time.Time{})
	for {
		var m struct {
			Op int             `json:"op"`
			D  json.RawMessage `json:"d"`
		}
		if err := vc.ws.ReadJSON(&m); err != nil {
			return nil, err
		}
		vc.noteSpeaking(m.Op, m.D)
		if m.Op == op {
			return m.D, nil
		}
	}
}

func (vc *VoiceClient) noteSpeaking(op int, d json.RawMessage) {
	if op != protocol.VoiceSpeaking {
		return
	}
	var s struct {
		UserID string `json:"user_id"`
		SSRC   uint32 `json:"ssrc"`
	}
	if json.Unmarshal(d, &s) == nil && s.UserID != "" {
		vc.mu.Lock()
		vc.speakers[s.SSRC] = s.UserID
		vc.mu.Unlock()
	}
}

// readGateway keeps the voice websocket read (speaking map) and alive.
func (vc *VoiceClient) readGateway() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	go func() {
		for range t.C {
			if vc.send(protocol.VoiceHeartbeat, map[string]any{"t": time.Now().UnixMilli(), "seq_ack": -1}) != nil {
				return
			}
		}
	}()
	for {
		var m struct {
			Op int             `json:"op"`
			D  json.RawMessage `json:"d"`
		}
		if err := vc.ws.ReadJSON(&m); err != nil {
			return
		}
		vc.noteSpeaking(m.Op, m.D)
	}
}

// Speaker returns the user an SSRC belongs to, as op 5 announced it.
func (vc *VoiceClient) Speaker(ssrc uint32) string {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	return vc.speakers[ssrc]
}

// SetSpeaking sends voice op 5, with the SSRC the client sends under (a
// WebRTC client's own, as a browser's).
func (vc *VoiceClient) SetSpeaking(flags int) error {
	ssrc := vc.SSRC
	if vc.rtc != nil {
		ssrc = vc.rtc.SSRC()
	}
	return vc.send(protocol.VoiceSpeaking, map[string]any{"speaking": flags, "delay": 0, "ssrc": ssrc})
}

// WebRTC reports whether the client's media is WebRTC.
func (vc *VoiceClient) WebRTC() bool { return vc.rtc != nil }

// SendOpus sends one Opus frame as the next RTP packet (20 ms later).
func (vc *VoiceClient) SendOpus(frame []byte) error {
	_, err := vc.SendOpusSeq(frame)
	return err
}

// SendOpusSeq is SendOpus returning the packet's RTP sequence number.
func (vc *VoiceClient) SendOpusSeq(frame []byte) (uint16, error) {
	vc.seq++
	vc.ts += 960
	vc.counter++
	if vc.rtc != nil {
		return vc.seq, vc.sendWebRTC(frame)
	}
	pkt := make([]byte, 12, 12+len(frame))
	pkt[0], pkt[1] = 0x80, 0x78
	binary.BigEndian.PutUint16(pkt[2:], vc.seq)
	binary.BigEndian.PutUint32(pkt[4:], vc.ts)
	binary.BigEndian.PutUint32(pkt[8:], vc.SSRC)
	pkt = append(pkt, frame...)
	nonce := make([]byte, vc.cipher.Mode().NonceSize())
	if len(nonce) > 0 {
		binary.BigEndian.PutUint32(nonce, vc.counter)
	}
	out, err := vc.cipher.Seal(nil, pkt, nonce)
	if err != nil {
		return 0, err
	}
	_, err = vc.UDP.Write(out)
	return vc.seq, err
}

// Receive returns the next Opus frame and its SSRC, skipping non-RTP
// datagrams, or an error after timeout.
func (vc *VoiceClient) Receive(timeout time.Duration) (ssrc uint32, opus []byte, err error) {
	ssrc, _, opus, err = vc.ReceivePacket(timeout)
	return ssrc, opus, err
}

// ReceivePacket is Receive with the RTP sequence number.
func (vc *VoiceClient) ReceivePacket(timeout time.Duration) (ssrc uint32, seq uint16, opus []byte, err error) {
	if vc.rtc != nil {
		return vc.receiveWebRTC(timeout)
	}
	for {
		vc.UDP.SetReadDeadline(time.Now().Add(timeout))
		n, err := vc.UDP.Read(vc.readBuf)
		if err != nil {
			return 0, 0, nil, err
		}
		if transport.Classify(vc.readBuf[:n]) != transport.KindRTP {
			continue
		}
		plain, _, err := vc.cipher.Open(vc.plain[:0], vc.readBuf[:n])
		if err != nil {
			return 0, 0, nil, err
		}
		vc.plain = plain
		h, err := transport.ParseRTP(plain)
		if err != nil {
			return 0, 0, nil, err
		}
		p, err := transport.Payload(plain, h)
		if err != nil {
			return 0, 0, nil, err
		}
		return h.SSRC, h.Sequence, p, nil
	}
}

// Close ends the voice connection.
func (vc *VoiceClient) Close() error {
	if vc.UDP != nil {
		vc.UDP.Close()
	}
	if vc.rtc != nil {
		vc.rtc.Close()
	}
	return vc.ws.Close()
}

// udpSources spreads voice clients over 250 loopback source addresses
// when the server is on loopback, as real users come from many addresses:
// the node limits discovery answers per source IP (transport/limit.go),
// and a thousand clients from 127.0.0.1 moving to a new node at once would
// look like one flooding host.
var udpSources atomic.Uint32

func udpLocal(server netip.AddrPort) *net.UDPAddr {
	if a := server.Addr().Unmap(); !a.Is4() || !a.IsLoopback() {
		return nil
	}
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+udpSources.Add(1)%250))}
}
