package cfparse

import (
	"fmt"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Unrecognized returns the error of the subdirective d is on, which is
// none of names (the block's subdirectives): at the Caddyfile line, with
// the nearest of names when one is close, e.g.
//
//	unrecognized subdirective "delivre_to"; did you mean "deliver_to"?
func Unrecognized(d *caddyfile.Dispenser, names []string) error {
	return d.Errf("unrecognized subdirective %q%s", d.Val(), DidYouMean(d.Val(), names))
}

// DidYouMean returns `; did you mean "x"?` for the name of names nearest
// to got, or "" if none is close: within one edit (insert, delete,
// replace or swap two neighbours) for names of up to five letters, two
// for longer ones, ignoring case.
func DidYouMean(got string, names []string) string {
	best, bestDist := "", -1
	low := strings.ToLower(got)
	for _, n := range names {
		dist := editDistance(low, strings.ToLower(n))
		limit := 1
		if len(n) > 5 {
			limit = 2
		}
		if dist <= limit && dist < len(n) && (bestDist < 0 || dist < bestDist) {
			best, bestDist = n, dist
		}
	}
	if bestDist < 0 {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the optimal string alignment distance of a and b: the
// number of inserts, deletes, replacements and swaps of two neighbours
// that make one of the other.
func editDistance(a, b string) int {
	// d[i][j] is the distance of a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
