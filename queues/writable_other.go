//go:build !unix

package queues

// writable reports whether this process may create files in the
// directory dir; without access(2), the spool's open finds out.
func writable(string) error { return nil }
