// Package pgtest starts a real PostgreSQL server for tests: its own data
// directory, a random loopback port, trust authentication, stopped when the
// test ends. It uses Debian's server binaries (package postgresql); the
// test suite's script installs them.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running PostgreSQL.
type Server struct {
	Port int
	dbs  atomic.Int64
	// ctl runs pg_ctl on this server's data directory (as the right user).
	ctl func(args ...string) *exec.Cmd
}

// Stop shuts the server down at once (as a crash would, for tests of what
// clients of the store do meanwhile); Start brings it back on the same port
// and data.
func (s *Server) Stop() error {
	if out, err := s.ctl("-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: stop: %v: %s", err, out)
	}
	return nil
}

// Start starts a stopped server again.
func (s *Server) Start() error {
	if out, err := s.ctl("-w", "-t", "60", "start").CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: start: %v: %s", err, out)
	}
	return nil
}

// binDir finds the newest installed server's binaries.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i], nil
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("pgtest: no PostgreSQL server binaries (install Debian's postgresql package; scripts/test.sh does)")
}

// Start initialises and starts a server for t and its subtests.
func Start(t testing.TB) *Server {
	t.Helper()
	s, stop, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return s
}

// Launch starts a server outside a test (from TestMain, for a whole
// package); stop shuts it down and removes its files.
func Launch() (s *Server, stop func(), err error) {
	bin, err := binDir()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "chorus-pg")
	if err != nil {
		return nil, nil, err
	}
	cleanup := []func(){func() { os.RemoveAll(dir) }}
	stop = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	// initdb refuses to run as root: then run the server as the postgres
	// user Debian's package creates, in a directory it may enter.
	run := func(name string, args ...string) *exec.Cmd { return exec.Command(filepath.Join(bin, name), args...) }
	if os.Geteuid() == 0 {
		pu, err := user.Lookup("postgres")
		if err != nil {
			return nil, nil, fmt.Errorf("pgtest: running as root needs the postgres user of Debian's postgresql package: %w", err)
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		os.Chmod(dir, 0o755)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, nil, err
		}
		run = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(bin, name)}, args...)...)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "chorus", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=300", port, dir)
	srv := &Server{Port: port, ctl: func(args ...string) *exec.Cmd {
		return run("pg_ctl", append([]string{"-D", data, "-o", opts, "-l", filepath.Join(dir, "log")}, args...)...)
	}}
	if err := srv.Start(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		return nil, nil, fmt.Errorf("%v\n%s", err, log)
	}
	cleanup = append(cleanup, func() { srv.ctl("-m", "immediate", "-w", "stop").Run() })
	return srv, stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DSN addresses database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://chorus@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// NewDatabase creates an empty database and returns its address.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	name := fmt.Sprintf("t%d", s.dbs.Add(1))
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return s.DSN(name)
}
