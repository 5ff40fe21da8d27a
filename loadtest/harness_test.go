package loadtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// The scenarios talk to a real chorus process over the wire, as they do in
// production; TestMain builds it once.
var chorusBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chorus-loadtest")
	if err != nil {
		panic(err)
	}
	chorusBin = filepath.Join(dir, "chorus")
	build := exec.Command("go", "build", "-o", chorusBin, "./cmd/chorus")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building chorus:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type node struct {
	base, botToken, data, ca string
	cmd                      *exec.Cmd
}

var (
	reBase = regexp.MustCompile(`gateway \+ REST\s+(http://\S+)`)
	reBot  = regexp.MustCompile(`bot\s+chorus-bot\s+id \d+\s+token (\S+)`)
	reCA   = regexp.MustCompile(`development CA\s+(\S+)`)
)

func startNode(t *testing.T, extra ...string) *node {
	t.Helper()
	n := &node{data: t.TempDir()}
	args := append([]string{"serve", "--demo", "--data", n.data, "--http", "127.0.0.1:0", "--https", "off", "--voice", "off",
		"--max-concurrency", "100000", "--rest-rate", "100000"}, extra...)
	n.cmd = exec.Command(chorusBin, args...)
	out, _ := n.cmd.StdoutPipe()
	n.cmd.Stderr = os.Stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
		}
	})
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(60 * time.Second)
	for (n.base == "" || n.botToken == "") && sc.Scan() && time.Now().Before(deadline) {
		if m := reBase.FindStringSubmatch(sc.Text()); m != nil {
			n.base = m[1]
		}
		if m := reBot.FindStringSubmatch(sc.Text()); m != nil {
			n.botToken = m[1]
		}
		if m := reCA.FindStringSubmatch(sc.Text()); m != nil {
			n.ca = m[1]
		}
	}
	if n.base == "" || n.botToken == "" {
		t.Fatal("chorus did not start")
	}
	go io.Copy(io.Discard, out)
	return n
}
