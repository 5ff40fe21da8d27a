// Package interop runs unmodified third-party client libraries against a
// real `chorus serve` process. It is its own module so the main module
// never imports a client library.
package interop

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/cluster/clustertest"
)

var chorusBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chorus-interop")
	if err != nil {
		panic(err)
	}
	chorusBin = filepath.Join(dir, "chorus")
	build := exec.Command("go", "build", "-race", "-o", chorusBin, "./cmd/chorus")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building chorus:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	clustertest.RemoveBinary()
	os.Exit(code)
}

// chorus is a running `chorus serve --demo` process on loopback.
type chorus struct {
	HTTP, HTTPS, CA string
	GuildID         string
	General, Random string
	Lounge          string
	Tokens          map[string]string // bot, alice, bob
	IDs             map[string]string
	Data            string
	PID             int
}

var (
	reHTTP  = regexp.MustCompile(`gateway \+ REST\s+http://(\S+)`)
	reHTTPS = regexp.MustCompile(`TLS\s+https://(\S+)`)
	reCA    = regexp.MustCompile(`development CA\s+(\S+)`)
	reGuild = regexp.MustCompile(`Demo guild .* \(id (\d+)\)`)
	reChans = regexp.MustCompile(`#general (\d+)\s+#random (\d+)\s+voice Lounge (\d+)`)
	reUser  = regexp.MustCompile(`(?:bot|user)\s+(\S+)\s+id (\d+)\s+token (\S+)`)
)

// startChorus starts the binary with the demo data and waits until it has
// printed its addresses and tokens.
func startChorus(t *testing.T, extra ...string) *chorus {
	t.Helper()
	return startChorusWith(t, chorusBin, extra...)
}

// buildPlain builds chorus without the race detector, for measurements.
func buildPlain(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "chorus")
	build := exec.Command("go", "build", "-o", bin, "./cmd/chorus")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func startChorusWith(t testing.TB, bin string, extra ...string) *chorus {
	t.Helper()
	data := t.TempDir()
	args := append([]string{"serve", "--demo", "--data", data, "--http", "127.0.0.1:0", "--https", "127.0.0.1:0", "--voice", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			// The binary is built with the race detector, which makes it
			// exit with status 66 when it saw a race.
			if err != nil {
				t.Errorf("chorus exited with %v after SIGTERM (66 = data race, see stderr)", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("chorus did not stop within 10 s of SIGTERM")
		}
	})
	c := &chorus{Tokens: map[string]string{}, IDs: map[string]string{}, Data: data, PID: cmd.Process.Pid}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	for len(c.Tokens) < 3 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("chorus exited before it was ready")
			}
			if m := reHTTP.FindStringSubmatch(l); m != nil {
				c.HTTP = m[1]
			} else if m := reHTTPS.FindStringSubmatch(l); m != nil {
				c.HTTPS = m[1]
			} else if m := reCA.FindStringSubmatch(l); m != nil {
				c.CA = m[1]
			} else if m := reGuild.FindStringSubmatch(l); m != nil {
				c.GuildID = m[1]
			} else if m := reChans.FindStringSubmatch(l); m != nil {
				c.General, c.Random, c.Lounge = m[1], m[2], m[3]
			} else if m := reUser.FindStringSubmatch(l); m != nil && !strings.HasPrefix(l, "Try") {
				name := strings.TrimPrefix(m[1], "chorus-")
				c.Tokens[name], c.IDs[name] = m[3], m[2]
			}
		case <-deadline:
			t.Fatal("chorus did not print its demo data in time")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return c
}

func within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
