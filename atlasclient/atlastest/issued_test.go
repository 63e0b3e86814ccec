package atlastest

import (
	"slices"
	"testing"
)

// TestIssuedTokens checks that every access token the simulator issues is
// listed, in order, and that a refused authentication adds none.
func TestIssuedTokens(t *testing.T) {
	srv := NewServer(t, Options{})
	if got := srv.IssuedTokens(); len(got) != 0 {
		t.Fatalf("IssuedTokens before any authtoken call = %q", got)
	}
	first, second := token(t, srv), token(t, srv)
	do(t, srv, "POST", "/v1/docstream/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", "wrong")
	srv.Reset()
	if got := srv.IssuedTokens(); !slices.Equal(got, []string{first, second}) {
		t.Errorf("IssuedTokens = %q, want the two issued tokens", got)
	}
}
