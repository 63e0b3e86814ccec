//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import (
	"os"
	"path/filepath"
)

// lockDir creates the lock file. Without flock on this platform, only
// the in-process check of Open guards the directory: do not point two
// processes at one spool.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
}

// unlockDir closes the lock file.
func unlockDir(f *os.File) {
	f.Close()
}
