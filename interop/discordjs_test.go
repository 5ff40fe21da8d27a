package interop

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// needNode makes sure the npm packages are installed; .ci/run installs them
// with `npm ci`.
func needNode(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("node_modules/discord.js"); err != nil {
		t.Fatal("interop/node_modules is missing: run `npm ci` in interop/ (the README's test command does)")
	}
}

func runNode(t *testing.T, script string, env []string, limit time.Duration) map[string]any {
	t.Helper()
	cmd := exec.Command("node", script)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish in %s", script, limit)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res map[string]any
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
		t.Fatalf("%s: %v; output:\n%s", script, err, out)
	}
	if err != nil || res["ok"] != true {
		t.Fatalf("%s failed: %v\n%s", script, err, out)
	}
	return res
}

func TestDiscordJSChat(t *testing.T) {
	needNode(t)
	proxyPort := freePort(t)
	c := startChorus(t, "--gateway-url", "ws://127.0.0.1:"+strconv.Itoa(proxyPort))
	res := runNode(t, "js/chat.mjs", []string{
		"CHORUS_HTTP=" + c.HTTP,
		"CHORUS_PROXY_PORT=" + strconv.Itoa(proxyPort),
		"CHORUS_GUILD=" + c.GuildID,
		"CHORUS_GENERAL=" + c.General,
		"CHORUS_BOT_ID=" + c.IDs["bot"],
		"CHORUS_ALICE_ID=" + c.IDs["alice"],
		"CHORUS_BOT_TOKEN=" + c.Tokens["bot"],
		"CHORUS_ALICE_TOKEN=" + c.Tokens["alice"],
	}, 3*time.Minute)
	t.Logf("discord.js: %v", res["results"])
}

func TestDiscordJSVoice(t *testing.T) {
	needNode(t)
	// Every mode @discordjs/voice can select: AES-GCM (node's crypto) and
	// XChaCha20 (libsodium-wrappers). The server offers one at a time.
	for _, mode := range []string{"aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"} {
		t.Run(mode, func(t *testing.T) {
			c := startChorus(t, "--voice-modes", mode)
			res := runNode(t, "js/voice.mjs", []string{
				"NODE_EXTRA_CA_CERTS=" + c.CA,
				"CHORUS_HTTP=" + c.HTTP,
				"CHORUS_GUILD=" + c.GuildID,
				"CHORUS_LOUNGE=" + c.Lounge,
				"CHORUS_BOT_ID=" + c.IDs["bot"],
				"CHORUS_ALICE_ID=" + c.IDs["alice"],
				"CHORUS_BOT_TOKEN=" + c.Tokens["bot"],
				"CHORUS_ALICE_TOKEN=" + c.Tokens["alice"],
				"CHORUS_EXPECT_MODE=" + mode,
			}, 3*time.Minute)
			t.Logf("@discordjs/voice: %v", res["results"])
		})
	}
}
