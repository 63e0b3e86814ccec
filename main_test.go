package caddyatlas

import (
	"fmt"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// TestMain points Caddy's default storage, where the atlas handler keeps
// its token (see token_storage.go), at a directory of this run: a handler
// a test provisions then neither writes into the user's Caddy data
// directory nor finds a token stored there by another run. The gateways
// of the end-to-end tests run in package e2e, which has a TestMain of its
// own.
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
