//go:build unix

package queues

import "syscall"

// writable reports whether this process may create files in the
// directory dir.
func writable(dir string) error {
	const wOK, xOK = 0x2, 0x1
	return syscall.Access(dir, wOK|xOK)
}
