package spool_test

import (
	"context"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/queue/queuetest"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// spoolOptions maps the suite's delivery options onto a spool's.
func spoolOptions(o queuetest.Options) spool.Options {
	return spool.Options{
		Deliver: o.Deliver, Retention: o.Retention, MaxAttempts: o.MaxAttempts, BackoffMin: o.BackoffMin,
		BackoffMax: o.BackoffMax, DeliveryTimeout: o.DeliveryTimeout, Concurrency: o.Concurrency,
		Logger: o.Logger, Observer: o.Observer,
	}
}

// testStore is a FileSpool whose Reconfigure takes the suite's options.
type testStore struct {
	*spool.FileSpool
}

func (s testStore) Reconfigure(o queuetest.Options) error {
	return s.FileSpool.Reconfigure(spoolOptions(o))
}

// TestConformance runs the Store suite shared with the other backends.
func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queuetest.Opener {
		dir := t.TempDir()
		return func(t *testing.T, o queuetest.Options) queuetest.Store {
			s, err := spool.Open(dir, spoolOptions(o))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close(context.Background()) })
			return testStore{FileSpool: s}
		}
	})
}
