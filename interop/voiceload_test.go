package interop

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/loadtest"
)

// BenchmarkVoiceForwardLoopback measures forwarding over real UDP on
// loopback: one speaker and RECEIVERS (default 9) listeners in one room, all
// our own wire-only clients, against a chorus process built without the
// race detector. It reports forwarded packets per second, loss, and the
// server's CPU time per forwarded packet (from /proc/<pid>/stat).
//
//	cd interop && go test -run '^$' -bench VoiceForwardLoopback -benchtime 1x
func BenchmarkVoiceForwardLoopback(b *testing.B) {
	receivers := 9
	if v := os.Getenv("RECEIVERS"); v != "" {
		receivers, _ = strconv.Atoi(v)
	}
	const packets = 20000
	c := startChorusWith(b, buildPlain(b), "--voice-modes", "aead_aes256_gcm_rtpsize", "--max-concurrency", "1000")
	pem, _ := os.ReadFile(c.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	dialer := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	adminTok, _ := os.ReadFile(filepath.Join(c.Data, "admin.token"))
	admin := func(method, path string, body any, out any) {
		bb, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, "http://"+c.HTTP+path, bytes.NewReader(bb))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(adminTok)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode >= 300 {
			b.Fatalf("%s %s: %v %v", method, path, resp, err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	join := func(user, token string) *loadtest.VoiceClient {
		gw, err := loadtest.DialGateway(ctx, nil, "ws://"+c.HTTP, token, 1|1<<7)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { gw.Close() })
		vc, err := loadtest.JoinVoice(ctx, gw, dialer, c.GuildID, c.Lounge, user, crypto.AES256GCMRTPSize)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { vc.Close() })
		return vc
	}
	sender := join(c.IDs["alice"], c.Tokens["alice"])
	var rx []*loadtest.VoiceClient
	for i := 0; i < receivers; i++ {
		var u struct {
			User  struct{ ID string } `json:"user"`
			Token string              `json:"token"`
		}
		admin("POST", "/admin/v1/users", map[string]any{"username": fmt.Sprintf("listener%02d", i)}, &u)
		admin("PUT", "/admin/v1/guilds/"+c.GuildID+"/members/"+u.User.ID, map[string]any{}, nil)
		rx = append(rx, join(u.User.ID, u.Token))
	}
	sender.SetSpeaking(1)
	time.Sleep(200 * time.Millisecond)

	var got atomic.Int64
	var wg sync.WaitGroup
	for _, r := range rx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := r.Receive(time.Second); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	frame := bytes.Repeat([]byte{0xAB}, 160)
	cpu0 := processCPU(b, c.PID)
	start := time.Now()
	for i := 0; i < packets; i++ {
		sender.SendOpus(frame)
		if i%50 == 49 {
			time.Sleep(2 * time.Millisecond) // stay inside loopback socket buffers
		}
	}
	sent := time.Since(start)
	wg.Wait()
	cpu := processCPU(b, c.PID) - cpu0
	forwarded := got.Load()
	b.ReportMetric(float64(forwarded)/sent.Seconds(), "forwarded-packets/s")
	b.ReportMetric(100*(1-float64(forwarded)/float64(packets*receivers)), "loss-%")
	b.ReportMetric(float64(cpu.Microseconds())/float64(forwarded), "server-cpu-µs/forwarded-packet")
}

// processCPU returns a process's user+system CPU time (/proc/<pid>/stat).
func processCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
