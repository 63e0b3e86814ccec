package spool_test

import (
	"context"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/spool"
	"github.com/caddy-atlas/caddy-atlas/spool/spooltest"
)

// TestConformance runs the Store suite shared with the other backends.
func TestConformance(t *testing.T) {
	spooltest.Run(t, func(t *testing.T) spooltest.Opener {
		dir := t.TempDir()
		return func(t *testing.T, o spool.Options) spooltest.Store {
			s, err := spool.Open(dir, o)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close(context.Background()) })
			return s
		}
	})
}
