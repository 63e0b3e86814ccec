package caddyatlas

import (
	"fmt"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// TestMain points Caddy's default storage, where the atlas handler keeps
// its token (see token_storage.go), at a directory of this run: the
// in-process gateways of the tests then neither write into the user's Caddy
// data directory nor find a token stored there by another run (say, for a
// simulator that had the same port).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-atlas-test-storage-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddy.DefaultStorage = &certmagic.FileStorage{Path: dir}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
