package interop

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chorus-voice/chorus/cluster/clustertest"
)

// The rolling restart of TestDisgoRollingRestart with an unmodified
// discord.js 14 client: it resumes at another node whenever its node stops,
// never identifies again, and gets every message once, in order.
func TestDiscordJSRollingRestart(t *testing.T) {
	needNode(t)
	c, lb := clustertest.StartBalanced(t, 3)
	demo := c.Nodes[0].Demo

	cmd := exec.Command("node", "js/rolling.mjs")
	cmd.Env = append(os.Environ(), "CHORUS_HTTP="+lb.Addr(), "CHORUS_BOT_TOKEN="+demo.Tokens["bot"])
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("js/rolling.mjs ended before %s", what)
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s from js/rolling.mjs", what)
		}
		return ""
	}
	if l := next("ready"); l != "ready" {
		t.Fatalf("first line %q, want ready", l)
	}

	var sent []string
	send := func(content string) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"content": content, "nonce": content, "enforce_nonce": true})
		retrySend(t, content, func() error {
			req, _ := http.NewRequest("POST", "http://"+lb.Addr()+"/api/v10/channels/"+demo.General+"/messages", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bot "+demo.Tokens["bot"])
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return nil
		})
		sent = append(sent, content)
	}
	send("before the restarts")
	c.RollingRestart(t, lb, func(nd *clustertest.Node) { send("after " + nd.ID + " stopped") })
	send("last")
	resumed := 0
	for _, want := range sent {
		for {
			l := next("message " + want)
			if l == "resumed" {
				resumed++
				continue
			}
			if l == "ready" {
				t.Fatalf("discord.js identified again (a second READY) before %q", want)
			}
			if got := strings.TrimPrefix(l, "message "); got != want {
				t.Fatalf("got %q, want %q (sent: %v)", got, want, sent)
			}
			break
		}
	}
	if resumed == 0 {
		t.Fatal("discord.js never resumed: its node was never stopped?")
	}
	t.Logf("discord.js resumed %d times at another node, never identified again", resumed)
}
