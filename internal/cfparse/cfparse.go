// Package cfparse holds the small helpers that every Caddyfile block of
// caddy-atlas parses its subdirectives with, so that each block words its
// errors alike: a repeated subdirective, a missing or extra argument, a
// bad duration, size or count. Each helper reads the arguments of the
// subdirective the dispenser is on and leaves it at the end of its line.
package cfparse

import (
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// Seen records the subdirectives of one block, to refuse a repeat.
type Seen map[string]bool

// Once records the subdirective d is on, and refuses it if the block
// already had it.
func (s Seen) Once(d *caddyfile.Dispenser) error {
	name := d.Val()
	if s[name] {
		return d.Errf("subdirective %q given more than once", name)
	}
	s[name] = true
	return nil
}

// Arg returns the one argument of the subdirective d is on.
func Arg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	val := d.Val()
	if d.NextArg() {
		return "", d.ArgErr() // names the extra argument
	}
	return val, nil
}

// String sets *dst to the one argument of the subdirective d is on,
// which must not be empty.
func String(d *caddyfile.Dispenser, dst *string) error {
	name := d.Val()
	val, err := Arg(d)
	if err != nil {
		return err
	}
	if val == "" {
		return d.Errf("%s must not be empty", name)
	}
	*dst = val
	return nil
}

// Append appends the one argument of the subdirective d is on, which
// must not be empty, to *dst: for subdirectives that repeat.
func Append(d *caddyfile.Dispenser, dst *[]string) error {
	var val string
	if err := String(d, &val); err != nil {
		return err
	}
	*dst = append(*dst, val)
	return nil
}

// Duration sets *dst to the one argument of the subdirective d is on: a
// positive duration in Caddy's syntax (1d, 90s, 1h30m).
func Duration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	val, err := Arg(d)
	if err != nil {
		return err
	}
	dur, err := ParseDuration(d, name, val)
	if err != nil {
		return err
	}
	*dst = dur
	return nil
}

// ParseDuration parses val, an argument of subdirective name, as a
// positive duration.
func ParseDuration(d *caddyfile.Dispenser, name, val string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(val)
	if err != nil {
		return 0, d.Errf("%s: %v", name, err)
	}
	if dur <= 0 {
		return 0, d.Errf("%s must be positive, got %s", name, val)
	}
	return caddy.Duration(dur), nil
}

// Size sets *dst to the one argument of the subdirective d is on: a size
// in bytes of at least 1 and at most limit (math.MaxInt64 if limit is 0),
// such as 32MiB; example is a size the error message suggests.
func Size(d *caddyfile.Dispenser, dst *int64, limit int64, example string) error {
	name := d.Val()
	val, err := Arg(d)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = math.MaxInt64
	}
	size, err := humanize.ParseBytes(val)
	if err != nil {
		return d.Errf("%s: invalid size %q (want e.g. %s)", name, val, example)
	}
	if size == 0 || size > uint64(limit) {
		return d.Errf("%s must be between 1 byte and %s, got %s", name, strings.Replace(humanize.IBytes(uint64(limit)), ".0 ", " ", 1), val)
	}
	*dst = int64(size)
	return nil
}

// Count sets *dst to the one argument of the subdirective d is on: a
// whole number of at least min and at most max.
func Count(d *caddyfile.Dispenser, dst *int, min, max int) error {
	name := d.Val()
	val, err := Arg(d)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(val)
	if err != nil || n < min || n > max {
		if max == math.MaxInt {
			return d.Errf("%s must be a whole number of at least %d, got %s", name, min, val)
		}
		return d.Errf("%s must be a whole number from %d to %d, got %s", name, min, max, val)
	}
	*dst = n
	return nil
}
