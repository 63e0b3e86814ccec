package httpjson

import "testing"

// TestIsJSONMediaType checks which Content-Type values are JSON.
func TestIsJSONMediaType(t *testing.T) {
	for v, want := range map[string]bool{
		"application/json":                     true,
		"Application/JSON; charset=UTF-8":      true,
		"application/problem+json":             true,
		"application/vnd.atlas.v1+json; x=y":   true,
		"text/json":                            false,
		"text/plain":                           false,
		"application/x-www-form-urlencoded":    false,
		"application/+json":                    false,
		"application/jsonx":                    false,
		"":                                     false,
		"application/json; charset=\"unclosed": false,
		"multipart/form-data; boundary=x":      false,
	} {
		if got := IsJSONMediaType(v); got != want {
			t.Errorf("IsJSONMediaType(%q) = %v", v, got)
		}
	}
}
