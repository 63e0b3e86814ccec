package caddyatlas

import (
	"fmt"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-atlas/caddy-atlas/mask"
)

// MaskRule names a field whose value the apps behind the gateway see
// masked: on the extracts route (pages and all=1), on the callback
// hand-off (synchronous and durable, masked before it is stored) and in
// the admin API's one-callback inspection.
type MaskRule struct {
	// The field: a key of a document's file_data, such as
	// aadhaar_number, whatever the document type.
	Field string `json:"field"`

	// last4 (the default): the last four characters kept, the others
	// replaced by X, separators (whitespace, dashes) removed:
	// "2345 6789 0123" -> "XXXXXXXX0123"; a value of fewer than eight
	// characters is all X. redact: the value replaced by "REDACTED".
	Style string `json:"style,omitempty"`
}

// provisionMask builds the handler's masker from its rules; nil when
// there are none.
func provisionMask(rules []MaskRule) (*mask.Masker, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	fields := make(map[string]mask.Style, len(rules))
	for _, r := range rules {
		if r.Field == "" {
			return nil, fmt.Errorf("mask: a rule has no field")
		}
		if _, dup := fields[r.Field]; dup {
			return nil, fmt.Errorf("mask: field %q is given more than once", r.Field)
		}
		st, err := mask.ParseStyle(r.Style)
		if err != nil {
			return nil, fmt.Errorf("mask: field %q: %w", r.Field, err)
		}
		fields[r.Field] = st
	}
	return mask.New(fields)
}

// unmarshalMaskRule parses `mask <field> [last4|redact]`; d is at
// `mask`.
func unmarshalMaskRule(d *caddyfile.Dispenser, rules []MaskRule) ([]MaskRule, error) {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return nil, d.ArgErr()
	}
	r := MaskRule{Field: args[0]}
	if len(args) == 2 {
		if _, err := mask.ParseStyle(args[1]); err != nil || args[1] == "" {
			return nil, d.Errf("mask %s: unknown style %q (want last4 or redact)", args[0], args[1])
		}
		r.Style = args[1]
	}
	for _, o := range rules {
		if o.Field == r.Field {
			return nil, d.Errf("mask: field %q is given more than once", r.Field)
		}
	}
	return append(rules, r), nil
}
