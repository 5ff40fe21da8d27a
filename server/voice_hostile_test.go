package server_test

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/transport"
)

// A room member who knows a listener's SSRC (op 5 tells the room) sends IP
// discovery for it from another socket: it gets no answer and none of the
// room's media, and a keep-alive from it is not echoed. The listener never
// sends a packet of its own, so only its confirmed discovery address
// (Select Protocol) says where its media goes.
func TestDiscoveryCannotHijackMedia(t *testing.T) {
	f, pool := voiceFixture(t)
	aliceGW := f.dial("v=10")
	aliceGW.ready(f.demo.AliceToken, allIntents)
	aliceGW.waitFor("GUILD_CREATE")
	bobGW := f.dial("v=10")
	bobGW.ready(f.demo.BobToken, allIntents)
	bobGW.waitFor("GUILD_CREATE")
	alice := joinVoice(t, f, pool, aliceGW, f.demo.Alice.ID.String(), crypto.AES256GCMRTPSize)
	bob := joinVoice(t, f, pool, bobGW, f.demo.Bob.ID.String(), crypto.AES256GCMRTPSize)
	alice.ws.WriteJSON(map[string]any{"op": 5, "d": map[string]any{"speaking": 1, "delay": 0, "ssrc": alice.ssrc}})
	bob.wait(5)

	attacker, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(bob.server))
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	req := make([]byte, transport.DiscoverySize)
	binary.BigEndian.PutUint16(req, 1)
	binary.BigEndian.PutUint16(req[2:], 70)
	binary.BigEndian.PutUint32(req[4:], bob.ssrc)
	refused := f.node.SFU().Drops.DiscoveryRefused.Load()
	attacker.Write(req)
	attacker.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	waitCount(t, func() bool {
		return f.node.SFU().Drops.DiscoveryRefused.Load() > refused && f.node.UDP().Stats.DroppedKeepAlive.Load() > 0
	})
	for i := range 5 {
		alice.sendAudio([]byte{byte(i)})
		if bob.receive(5*time.Second) == nil {
			t.Fatalf("frame %d did not reach the listener", i)
		}
	}
	attacker.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := attacker.Read(make([]byte, 1500)); err == nil {
		t.Fatalf("the attacker received %d bytes", n)
	}
}
