package cfparse

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// parse runs fn on the subdirective of a one-line block and returns its
// error, or "" for none.
func parse(t *testing.T, line string, fn func(d *caddyfile.Dispenser) error) string {
	t.Helper()
	d := caddyfile.NewTestDispenser("block {\n" + line + "\n}")
	d.Next()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := fn(d); err != nil {
			return err.Error()
		}
	}
	return ""
}

func TestHelpers(t *testing.T) {
	var (
		s   string
		dur caddy.Duration
		sz  int64
		n   int
		lst []string
	)
	cases := []struct {
		line, wantErr string
		fn            func(d *caddyfile.Dispenser) error
	}{
		{"name value", "", func(d *caddyfile.Dispenser) error { return String(d, &s) }},
		{"name", "wrong argument count", func(d *caddyfile.Dispenser) error { return String(d, &s) }},
		{"name a b", "unexpected line ending after 'b'", func(d *caddyfile.Dispenser) error { return String(d, &s) }},
		{`name ""`, "name must not be empty", func(d *caddyfile.Dispenser) error { return String(d, &s) }},
		{"keys k1", "", func(d *caddyfile.Dispenser) error { return Append(d, &lst) }},
		{"ttl 1d", "", func(d *caddyfile.Dispenser) error { return Duration(d, &dur) }},
		{"ttl soon", `ttl: time: invalid duration "soon"`, func(d *caddyfile.Dispenser) error { return Duration(d, &dur) }},
		{"ttl 0s", "ttl must be positive, got 0s", func(d *caddyfile.Dispenser) error { return Duration(d, &dur) }},
		{"max 2MiB", "", func(d *caddyfile.Dispenser) error { return Size(d, &sz, 0, "1MiB") }},
		{"max lots", `max: invalid size "lots" (want e.g. 1MiB)`, func(d *caddyfile.Dispenser) error { return Size(d, &sz, 0, "1MiB") }},
		{"max 0", "max must be between 1 byte and 8 EiB, got 0", func(d *caddyfile.Dispenser) error { return Size(d, &sz, 0, "1MiB") }},
		{"max 2TiB", "max must be between 1 byte and 1 TiB, got 2TiB", func(d *caddyfile.Dispenser) error { return Size(d, &sz, 1<<40, "1MiB") }},
		{"n 3", "", func(d *caddyfile.Dispenser) error { return Count(d, &n, 1, math.MaxInt) }},
		{"n 0", "n must be a whole number of at least 1, got 0", func(d *caddyfile.Dispenser) error { return Count(d, &n, 1, math.MaxInt) }},
		{"n 6", "n must be a whole number from 1 to 5, got 6", func(d *caddyfile.Dispenser) error { return Count(d, &n, 1, 5) }},
		{"a x\na y", `subdirective "a" given more than once, at Testfile:3`, func() func(d *caddyfile.Dispenser) error {
			seen := Seen{}
			return func(d *caddyfile.Dispenser) error {
				if err := seen.Once(d); err != nil {
					return err
				}
				d.RemainingArgs()
				return nil
			}
		}()},
	}
	for _, tc := range cases {
		got := parse(t, tc.line, tc.fn)
		if tc.wantErr == "" && got != "" || !strings.Contains(got, tc.wantErr) {
			t.Errorf("%q: error %q, want %q", tc.line, got, tc.wantErr)
		}
	}
	if s != "value" || dur != caddy.Duration(24*time.Hour) || sz != 2<<20 || n != 3 || len(lst) != 1 {
		t.Errorf("parsed %q %v %d %d %q", s, dur, sz, n, lst)
	}
}
