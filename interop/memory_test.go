package interop

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// BenchmarkIdleSessionMemory measures the server's memory per idle gateway
// session: SESSIONS (default 10000) real websocket sessions identify against
// a chorus process built without the race detector, then the growth of the
// process's RSS and of the Go heap+stacks is divided by the session count.
// COMPRESS=zlib-stream or zstd-stream has every session ask for transport
// compression. Run it once:
//
//	cd interop && go test -run '^$' -bench IdleSessionMemory -benchtime 1x
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := 10000
	if v := os.Getenv("SESSIONS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	bin := filepath.Join(b.TempDir(), "chorus")
	build := exec.Command("go", "build", "-o", bin, "./cmd/chorus")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--demo", "--data", b.TempDir(), "--http", "127.0.0.1:0", "--https", "off", "--voice", "off",
		"--heartbeat-interval", "10m", "--max-concurrency", "1000000", "--max-conns-per-ip", "0")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var addr, token string
	sc := bufio.NewScanner(out)
	for sc.Scan() && token == "" {
		if m := reHTTP.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
		}
		if m := reUser.FindStringSubmatch(sc.Text()); m != nil && strings.HasPrefix(m[1], "chorus-bot") {
			token = m[3]
		}
	}
	go io.Copy(io.Discard, out)

	compress := os.Getenv("COMPRESS")
	query := "/?v=10&encoding=json"
	if compress != "" {
		query += "&compress=" + compress
	}
	dial := func() (*websocket.Conn, error) {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+query, nil)
		if err != nil {
			return nil, err
		}
		ws.SetReadDeadline(time.Now().Add(60 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil { // Hello
			return nil, err
		}
		id := fmt.Sprintf(`{"op":2,"d":{"token":%q,"intents":513,"properties":{"os":"linux"}}}`, token)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(id)); err != nil {
			return nil, err
		}
		for seq := 1; ; seq++ { // until GUILD_CREATE
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return nil, err
			}
			if compress != "" && seq == 2 {
				// Compressed frames are not decoded here (10,000 client
				// decoders would dwarf what is measured): the bot's one guild
				// makes READY (seq 1) and GUILD_CREATE (seq 2).
				msg = []byte(`{"t":"GUILD_CREATE","s":2}`)
			}
			if strings.Contains(string(msg[:min(len(msg), 40)]), "GUILD_CREATE") {
				// An idle client heartbeats with the last seq it saw; the
				// server may then drop what it holds for a resume.
				var env struct{ S int64 }
				json.Unmarshal(msg, &env)
				if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"op":1,"d":%d}`, env.S))); err != nil {
					return nil, err
				}
				if _, _, err := ws.ReadMessage(); err != nil { // ACK
					return nil, err
				}
				return ws, nil
			}
		}
	}
	// Warm up: one session, so code paths and pools exist before measuring.
	warm, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer warm.Close()
	// SETTLE lets the server idle longer before a reading (a forced GC runs
	// after two idle minutes, and the scavenger then returns pages).
	wait := 2 * time.Second
	if v := os.Getenv("SETTLE"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			wait = d
		}
	}
	settle := func() (rss, heap, stack int64) {
		time.Sleep(wait)
		heap, stack = goMemory(b, addr)
		return processRSS(b, cmd.Process.Pid), heap, stack
	}
	rss0, heap0, stack0 := settle()

	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ws, err := dial()
			if err != nil {
				errs <- err
				return
			}
			conns[i] = ws
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("session failed: %v", err)
	}
	took := time.Since(start)
	rss1, heap1, stack1 := settle()
	b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-bytes/session")
	b.ReportMetric(float64(heap1-heap0)/float64(n), "heap-bytes/session")
	b.ReportMetric(float64(stack1-stack0)/float64(n), "stack-bytes/session")
	b.ReportMetric(float64(n)/took.Seconds(), "identifies/s")
	for _, c := range conns {
		c.Close()
	}
}

func processRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// goMemory reads heap-in-use and stack-in-use from /metrics.
func goMemory(b *testing.B, addr string) (heap, stack int64) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "chorus_go_heap_inuse_bytes":
			heap = v
		case "chorus_go_stack_inuse_bytes":
			stack = v
		}
	}
	return heap, stack
}
