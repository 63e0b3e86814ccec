package queues

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// checkSpoolDir checks, creating nothing, that the spool can live in
// dir: dir, or else the nearest of its ancestors that exists (where the
// spool would create it), must be a directory this process may write
// in. The error names the path and the fix.
func checkSpoolDir(dir string) error {
	for p := dir; ; {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("spool %s: %s is not a directory: choose another spool directory", dir, p)
		case err == nil:
			if err := writable(p); err != nil {
				what := "the directory " + p
				if p != dir {
					what = "its parent " + p
				}
				return fmt.Errorf("spool %s cannot be written: %s is not writable by the user Caddy runs as (uid %d): %v; create %s and give that user write access to it, or choose another spool directory",
					dir, what, os.Getuid(), err, dir)
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			return fmt.Errorf("spool %s: %w", dir, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return nil
		}
		p = parent
	}
}
