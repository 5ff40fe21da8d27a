package loadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pion/rtp"

	"github.com/chorus-voice/chorus/protocol"
	"github.com/chorus-voice/chorus/rtc"
)

// A VoiceClient with Media.WebRTC joins as a browser does (webrtc.md):
// Select Protocol "webrtc" with a pion client's offer, DTLS-SRTP on the
// node's WebRTC port, every other speaker arriving under the SSRC op 5
// announced. Its packets reach ReceivePacket through a queue of copies:
// pion hands them over on its own goroutines.

// rtcQueue bounds the packets a WebRTC client holds unread; past it they
// are dropped (and show as loss: the load tester fell behind).
const rtcQueue = 512

// rtcPacket is a received packet's copy; Opus frames of voice are far
// under 400 bytes, and a longer one is cut (the load tester reads only the
// header).
type rtcPacket struct {
	ssrc uint32
	seq  uint16
	n    int
	buf  [400]byte
}

// connectWebRTC completes the voice connection after Ready over WebRTC.
func (vc *VoiceClient) connectWebRTC(ctx context.Context) error {
	vc.rtcIn = make(chan rtcPacket, rtcQueue)
	c, err := rtc.NewClient(func(p *rtp.Packet) {
		q := rtcPacket{ssrc: p.SSRC, seq: p.SequenceNumber}
		q.n = copy(q.buf[:], p.Payload)
		select {
		case vc.rtcIn <- q:
		default:
		}
	})
	if err != nil {
		return err
	}
	vc.rtc = c
	vc.send(protocol.VoiceSelectProtocol, map[string]any{"protocol": "webrtc", "data": c.Offer, "sdp": c.Offer,
		"codecs":            []map[string]any{{"name": "opus", "type": "audio", "priority": 1000, "payload_type": rtc.ClientOpusPT}},
		"rtc_connection_id": fmt.Sprintf("loadtest-%d", vc.SSRC)})
	raw, err := vc.wait(protocol.VoiceSessionDescription)
	if err != nil {
		return err
	}
	var desc struct {
		SDP string `json:"sdp"`
	}
	if err := json.Unmarshal(raw, &desc); err != nil || desc.SDP == "" {
		return fmt.Errorf("loadtest: webrtc session description without sdp: %s", raw)
	}
	connected := c.Connected()
	if err := c.Accept(desc.SDP); err != nil {
		return err
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-connected:
		return nil
	case <-t.C:
		return errors.New("loadtest: webrtc did not connect within 10 s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sendWebRTC sends one Opus frame as the next RTP packet.
func (vc *VoiceClient) sendWebRTC(frame []byte) error {
	vc.rtpOut.Version, vc.rtpOut.SequenceNumber, vc.rtpOut.Timestamp = 2, vc.seq, vc.ts
	vc.rtpOut.Payload = frame
	return vc.rtc.WriteRTP(&vc.rtpOut)
}

// receiveWebRTC is ReceivePacket for a WebRTC client.
func (vc *VoiceClient) receiveWebRTC(timeout time.Duration) (uint32, uint16, []byte, error) {
	if vc.rtcTimer == nil {
		vc.rtcTimer = time.NewTimer(timeout)
	} else {
		vc.rtcTimer.Reset(timeout)
	}
	select {
	case q := <-vc.rtcIn:
		vc.rtcTimer.Stop()
		n := copy(vc.readBuf, q.buf[:q.n])
		return q.ssrc, q.seq, vc.readBuf[:n], nil
	case <-vc.rtcTimer.C:
		return 0, 0, nil, errReceiveTimeout
	}
}

var errReceiveTimeout = errors.New("loadtest: nothing received in time")
