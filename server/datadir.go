package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The data directory holds secrets: the admin token, the development CA's
// key and, in the embedded store, the token signing key. Only the user the
// node runs as may read it, whatever its modes were when the node started
// (an older Chorus, a copy, a restore from backup).

// secureDataDir creates dir if needed and takes group and other access
// away from it and everything in it: directories 0700, files 0600 at most.
func secureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // the store removed it meanwhile (it runs while we walk)
		}
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil // never follow a link out of the directory
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if mode := info.Mode().Perm(); mode&0o077 != 0 {
			if err := os.Chmod(path, mode&0o700); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("data directory: %w", err)
			}
		}
		return nil
	})
}
