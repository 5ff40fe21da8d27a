package interop

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/disgoorg/disgo/gateway"
	"github.com/disgoorg/snowflake/v2"

	"github.com/chorus-voice/chorus/loadtest"
)

// toneWAV writes seconds of a 440 Hz tone, 48 kHz mono 16-bit PCM: the
// browser's fake microphone (Chromium loops the file).
func toneWAV(t *testing.T, seconds int) string {
	t.Helper()
	const rate = 48000
	n := rate * seconds
	b := make([]byte, 44+2*n)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+2*n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], rate)
	binary.LittleEndian.PutUint32(b[28:], rate*2)
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(2*n))
	for i := 0; i < n; i++ {
		v := int16(12000 * math.Sin(2*math.Pi*440*float64(i)/rate))
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(v))
	}
	path := filepath.Join(t.TempDir(), "tone.wav")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// artifactsDir is where the browser test keeps its screenshots:
// $CHORUS_ARTIFACTS, else artifacts/ at the repository's root.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CHORUS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	dir, _ = filepath.Abs(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The web client that `chorus serve` hands out, in Debian's Chromium:
// it signs in (the demo's one click), scrolls the history back to the
// start, sends a message that discord.js and disgo receive, shows one
// discord.js sends, and joins voice over WebRTC with a disgo voice client
// in the room: disgo receives the browser's microphone (a 440 Hz tone,
// decoded and measured) and the browser's getStats shows disgo's audio
// arriving. Screenshots of chat and of the call go to artifacts/.
func TestBrowserWebClient(t *testing.T) {
	needNode(t)
	if _, err := os.Stat("node_modules/playwright-core"); err != nil {
		t.Fatal("interop/node_modules/playwright-core is missing: run `npm ci` in interop/")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: the README's test command installs Debian's chromium")
	}
	c := startChorus(t, "--rest-rate", "1000") // the history is posted at once
	guildID, lounge := snowflake.MustParse(c.GuildID), snowflake.MustParse(c.Lounge)
	aliceID := snowflake.MustParse(c.IDs["alice"])

	// History: 60 messages, more than one page (the client loads 50).
	for i := range 60 {
		postMessage(t, c, c.Tokens["bot"], c.General, fmt.Sprintf("history %02d", i))
	}

	// disgo: a chat client, and a voice client speaking in the Lounge.
	chat := newDisgo(t, c, c.Tokens["bot"], gateway.CompressionNone)
	chat.waitReady(t, c.GuildID)
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	vb := voiceBot(t, c, c.Tokens["bot"], pool)
	sent, err := loadtest.OpusFrames("a")
	if err != nil {
		t.Fatal(err)
	}
	conn := vb.VoiceManager.CreateConn(guildID)
	if err := conn.Open(within(t, 20*time.Second), lounge, false, false); err != nil {
		t.Fatalf("disgo voice open: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	sink := &frameSink{got: map[snowflake.ID][][]byte{}}
	conn.SetOpusFrameReceiver(sink)
	conn.SetOpusFrameProvider(&loopSource{frames: sent})

	// The browser script.
	cmd := exec.Command("node", "js/browser.mjs")
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium, "CHORUS_HTTPS="+c.HTTPS, "CHORUS_HTTP="+c.HTTP,
		"CHORUS_GENERAL="+c.General, "CHORUS_ALICE_ID="+c.IDs["alice"], "CHORUS_BOT_TOKEN="+c.Tokens["bot"], "CHORUS_WAV="+toneWAV(t, 10),
		"CHORUS_ARTIFACTS="+artifactsDir(t))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	defer killed.Stop()
	var result string
	voiceUp := make(chan struct{})
	path := filepath.Join(t.TempDir(), "from-browser.frames") // made here: the goroutine may outlive a failed test
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	go func() {
		// Once the browser is in the call, wait for disgo to hold 3 s
		// of its audio, and hand the frames to the script to decode.
		select {
		case <-voiceUp:
		case <-time.After(3 * time.Minute):
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for sink.count(aliceID) < 150 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		sink.mu.Lock()
		got := sink.got[aliceID]
		sink.mu.Unlock()
		var b []byte
		for _, f := range got {
			b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
			b = append(b, f...)
		}
		os.WriteFile(path, b, 0o644)
		io.WriteString(stdin, "frames "+path+"\n")
	}()
	for l := range lines {
		t.Log(l)
		switch {
		case l == "step: voice connected":
			close(voiceUp)
		case strings.HasPrefix(l, "sent: "):
			if m := chat.waitMessage(t, strings.TrimPrefix(l, "sent: ")); m.Author.ID != aliceID {
				t.Errorf("disgo saw the browser's message from %s, want alice", m.Author.ID)
			}
		case strings.HasPrefix(l, "{"):
			result = l
		}
	}
	cmd.Wait()
	var r struct {
		OK      bool
		Error   string
		History int
		Inbound struct {
			PacketsReceived  int
			TotalAudioEnergy float64
		}
		Tone struct {
			Frames, RMS, Hz int
			VoicedSeconds   float64
		}
		PageErrors []string
	}
	if err := json.Unmarshal([]byte(result), &r); err != nil {
		t.Fatalf("browser script gave no result (%v): %q", err, result)
	}
	if !r.OK {
		t.Fatalf("browser script failed: %s (page errors %v)", r.Error, r.PageErrors)
	}
	if r.History != 60 {
		t.Errorf("the browser showed %d messages after scrolling back, want the 60 of history", r.History)
	}
	// The browser's microphone, through WebRTC, the SFU and the UDP
	// transport, decoded from what disgo received: the tone, not silence.
	if r.Tone.Frames < 150 || r.Tone.RMS < 500 || r.Tone.Hz < 400 || r.Tone.Hz > 480 || r.Tone.VoicedSeconds < 1 {
		t.Errorf("disgo received from the browser: %+v; want ≥ 150 frames of a 440 Hz tone", r.Tone)
	}
	// Chromium was sent on the leg's own SRTP path (keys learned from the
	// DTLS handshake), not pion's fallback.
	res, err := http.Get("http://" + c.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`chorus_voice_webrtc_peers_total{state="connected"} 1`, `chorus_voice_webrtc_peers_total{state="pion_srtp"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	t.Logf("browser: %d history messages; received %d packets from disgo (energy %.3f); disgo decoded %+v",
		r.History, r.Inbound.PacketsReceived, r.Inbound.TotalAudioEnergy, r.Tone)
}

// postMessage sends content to channel through REST.
func postMessage(t *testing.T, c *chorus, token, channel, content string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"content": content})
	req, _ := http.NewRequest("POST", "http://"+c.HTTP+"/api/v10/channels/"+channel+"/messages", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bot "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("POST message: %s", res.Status)
	}
}
