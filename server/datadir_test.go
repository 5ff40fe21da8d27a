package server_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// A data directory that other users could read (an older Chorus, a copy)
// is tightened at start: the directory 0700, every file in it at most 0600,
// the signing key's store and the admin token included.
func TestDataDirectoryIsPrivate(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPSAddr = "127.0.0.1:0" // the development CA's key is written too
	cfg.VoiceAddr = "off"
	if err := os.Chmod(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(cfg.DataDir, "left-over")
	if err := os.WriteFile(old, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	startConfig(t, cfg)
	seen := 0
	filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		info, _ := d.Info()
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", path, info.Mode().Perm())
		}
		seen++
		return nil
	})
	for _, want := range []string{"admin.token", "left-over", "tls"} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, want)); err != nil {
			t.Errorf("%s: %v", want, err)
		}
	}
	if seen < 4 {
		t.Fatalf("only %d entries looked at", seen)
	}
}
