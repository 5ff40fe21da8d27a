// Package natstest runs real nats-server processes for tests: a JetStream
// cluster on loopback, built from the nats-server module pinned in go.mod
// (never downloaded), each server a process a test can kill -9, SIGSTOP
// and start again.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const module = "github.com/nats-io/nats-server/v2"

// readyTimeout bounds the wait for a cluster to elect its JetStream meta
// leader (or a restarted server to rejoin).
const readyTimeout = 60 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary returns the path of a nats-server built from the version go.mod
// pins. It is built once per version into the user's cache directory and
// shared by every test binary (the rename makes concurrent builds safe).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("natstest: %v", buildErr)
	}
	return binPath
}

func build() (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	// The version go.mod pins (test binaries carry no dependency list).
	out, err := exec.Command(goBin, "list", "-m", "-f", "{{.Version}}", module).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %v", module, err)
	}
	version := strings.TrimSpace(string(out))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "chorus-natstest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server-"+version)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	cmd := exec.Command(goBin, "build", "-o", tmp, module)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", module, err, out)
	}
	return bin, os.Rename(tmp, bin)
}

// Server is one nats-server process of a Cluster.
type Server struct {
	Name string
	// URL is the client URL, nats://127.0.0.1:port.
	URL string
	bin string
	cfg string
	log string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Cluster is a set of nats-server processes routed to each other.
type Cluster struct {
	Servers []*Server
}

// URLs returns every server's client URL, comma-separated (what
// `chorus serve --nats` takes).
func (c *Cluster) URLs() string {
	var us []string
	for _, s := range c.Servers {
		us = append(us, s.URL)
	}
	return strings.Join(us, ",")
}

// Start runs an n-server JetStream cluster on loopback and waits until it
// has a meta leader. Servers are killed when the test ends; their logs are
// printed if it failed.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Binary(t)
	ports := freePorts(t, 2*n)
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	base := t.TempDir()
	c := &Cluster{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("nats-%d", i+1)
		dir := filepath.Join(base, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`server_name: %q
listen: "127.0.0.1:%d"
jetstream { store_dir: %q, max_memory_store: 256MB, max_file_store: 1GB }
`, name, ports[i], filepath.Join(dir, "js"))
		if n > 1 {
			cfg += fmt.Sprintf(`cluster { name: "chorus-test", listen: "127.0.0.1:%d", routes: [%s] }
`, ports[n+i], strings.Join(quoted(routes), ", "))
		}
		s := &Server{Name: name, URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), bin: bin,
			cfg: filepath.Join(dir, "nats.conf"), log: filepath.Join(dir, "nats.log")}
		if err := os.WriteFile(s.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		c.Servers = append(c.Servers, s)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			s.Kill()
			if t.Failed() {
				if b, err := os.ReadFile(s.log); err == nil {
					t.Logf("%s log (last 2 KiB):\n%s", s.Name, tail(b, 2048))
				}
			}
		}
	})
	if err := c.WaitReady(); err != nil {
		t.Fatal(err)
	}
	return c
}

// WaitReady waits until every running server answers JetStream requests
// (a meta leader is elected and the server has caught up with it).
func (c *Cluster) WaitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		if err := s.waitReady(deadline); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) waitReady(deadline time.Time) error {
	var last error
	for time.Now().Before(deadline) {
		nc, err := nats.Connect(s.URL, nats.Timeout(time.Second), nats.MaxReconnects(0))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("natstest: %s not ready after %v: %v", s.Name, readyTimeout, last)
}

// Start starts the server's process (again, after Kill: same ports, same
// JetStream directory).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("natstest: " + s.Name + " is running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "-c", s.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("natstest: start %s: %w", s.Name, err)
	}
	logf.Close() // the child has its own descriptor
	s.cmd = cmd
	return nil
}

// Running reports whether the process was started and not killed.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// PID returns the process id, 0 when not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Kill sends SIGKILL and reaps the process.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies too
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Stop sends SIGSTOP: the process keeps its sockets but answers nothing.
func (s *Server) Stop() error { return s.signal(syscall.SIGSTOP) }

// Cont sends SIGCONT to a stopped process.
func (s *Server) Cont() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("natstest: " + s.Name + " is not running")
	}
	return s.cmd.Process.Signal(sig)
}

// freePorts reserves n distinct loopback ports (all held until each is
// known, then released for the servers to bind).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
