package server_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/chorus-voice/chorus/server"
	"github.com/chorus-voice/chorus/store/pgtest"
)

// testPG is the PostgreSQL every node of this package's tests keeps its
// state in when CHORUS_TEST_STORE=postgres (scripts/test.sh runs the
// package both ways); otherwise nodes use the embedded store.
var testPG *pgtest.Server

func TestMain(m *testing.M) {
	if os.Getenv("CHORUS_TEST_STORE") != "postgres" {
		os.Exit(m.Run())
	}
	s, stop, err := pgtest.Launch()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testPG = s
	code := m.Run()
	stop()
	os.Exit(code)
}

// testConfig is a node on loopback ports chosen by the kernel, with a
// fresh data directory and, under CHORUS_TEST_STORE=postgres, a fresh
// database.
func testConfig(t *testing.T) server.Config {
	cfg := server.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", HTTPSAddr: "off", VoiceAddr: "off"}
	if testPG != nil {
		cfg.Postgres = testPG.NewDatabase(t)
	}
	return cfg
}
