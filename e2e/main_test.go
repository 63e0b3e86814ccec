// Package e2e holds the process-level tests of caddy-atlas: they run a
// real Caddy, in this process (caddytest) or as binaries built from
// cmd/caddy, in front of the Atlas simulator and stand-in apps.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	// The modules of cmd/caddy, for the Caddy that runs in this process.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-atlas/caddy-atlas"
	_ "github.com/caddy-atlas/caddy-atlas/demoapp"
	_ "github.com/caddy-atlas/caddy-atlas/simulator"
)

// TestMain points Caddy's default storage, where the atlas handler keeps
// its token, at a directory of this run: the in-process gateways of the
// tests then neither write into the user's Caddy data directory nor find
// a token stored there by another run (say, for a simulator that had the
// same port).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-atlas-e2e-storage-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddy.DefaultStorage = &certmagic.FileStorage{Path: dir}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
