package queue

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		failures int
		want     time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {10, 512 * time.Second}, {11, 10 * time.Minute}, {50, 10 * time.Minute}} {
		for range 50 {
			got := Backoff(time.Second, 10*time.Minute, c.failures)
			if got > c.want || got < c.want*8/10 {
				t.Fatalf("backoff after %d failures = %v, want in [%v, %v]", c.failures, got, c.want*8/10, c.want)
			}
		}
	}
}
