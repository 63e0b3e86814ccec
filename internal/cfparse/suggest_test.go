package cfparse

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestDidYouMean(t *testing.T) {
	names := []string{"deliver_to", "spool", "queue", "ca", "key", "max_body", "max_attempts"}
	for got, want := range map[string]string{
		"delivre_to":  "deliver_to", // a swap
		"deliverto":   "deliver_to", // a delete
		"deliver-to":  "deliver_to", // a replacement
		"Deliver_To":  "deliver_to", // case
		"deliver_tos": "deliver_to",
		"spol":        "spool",
		"kye":         "key",
		"cs":          "ca",
		"max_bdy":     "max_body",
		"x":           "",
		"endpoint":    "",
		"spoolz1":     "",
		"deliver_url": "",
	} {
		s := DidYouMean(got, names)
		if want == "" {
			if s != "" {
				t.Errorf("DidYouMean(%q) = %q, want none", got, s)
			}
			continue
		}
		if s != `; did you mean "`+want+`"?` {
			t.Errorf("DidYouMean(%q) = %q, want %q", got, s, want)
		}
	}
}

func TestUnrecognized(t *testing.T) {
	d := caddyfile.NewTestDispenser("block {\n\n\tdelivre_to x\n}")
	d.Next()
	d.NextBlock(0)
	err := Unrecognized(d, []string{"deliver_to"})
	want := `unrecognized subdirective "delivre_to"; did you mean "deliver_to"?, at Testfile:3`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Unrecognized = %v, want %q", err, want)
	}
}
