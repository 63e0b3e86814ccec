package atlastest

import (
	"net/http"
	"testing"
)

func TestOneLiveTokenRevokesPreviousTokens(t *testing.T) {
	srv := NewServer(t, Options{OneLiveToken: true})
	batch := srv.CreateBatch("a")
	first := token(t, srv)
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusOK {
		t.Fatalf("the only token: %d %s", r.status, r.body)
	}
	second := token(t, srv)
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusUnauthorized || r.jsonMap(t)["error"] != msgInvalidToken {
		t.Errorf("the first token after a second was issued: %d %s, want 401 %q", r.status, r.body, msgInvalidToken)
	}
	if r := upload(t, srv, first, "doc-1"); r.status != http.StatusUnauthorized {
		t.Errorf("upload with the revoked token: %d, want 401", r.status)
	}
	if r, _ := extracts(t, srv, second, "batch_id="+batch); r.status != http.StatusOK {
		t.Errorf("the latest token: %d %s", r.status, r.body)
	}

	// Off, every unexpired token is live again; on again, only the last.
	srv.SetOneLiveToken(false)
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusOK {
		t.Errorf("knob off, first token: %d", r.status)
	}
	srv.SetOneLiveToken(true)
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusUnauthorized {
		t.Errorf("knob on again, first token: %d, want 401", r.status)
	}
}

func TestOneLiveTokenOffByDefault(t *testing.T) {
	srv := NewServer(t, Options{})
	batch := srv.CreateBatch("a")
	first := token(t, srv)
	token(t, srv)
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusOK {
		t.Errorf("without the knob, an older token: %d, want 200", r.status)
	}
}

func TestOneLiveTokenControlEndpoint(t *testing.T) {
	srv := NewServer(t, Options{})
	batch := srv.CreateBatch("a")
	for _, bad := range []string{"", "maybe"} {
		if r := do(t, srv, http.MethodPost, "/_sim/one-live-token?enabled="+bad, ""); r.status != http.StatusBadRequest || r.jsonMap(t)["error"] == nil {
			t.Errorf("enabled=%q: %d %s, want 400 with an error", bad, r.status, r.body)
		}
	}
	if r := do(t, srv, http.MethodGet, "/_sim/one-live-token?enabled=true", ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", r.status)
	}
	if r := do(t, srv, http.MethodPost, "/_sim/one-live-token?enabled=true", ""); r.status != http.StatusOK {
		t.Fatalf("enabling: %d %s", r.status, r.body)
	}
	first := token(t, srv)
	token(t, srv)
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusUnauthorized {
		t.Errorf("after /_sim/one-live-token?enabled=true: %d, want 401", r.status)
	}
	// Reset restores the configured knob (off).
	if r := do(t, srv, http.MethodPost, "/_sim/reset", ""); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	if r, _ := extracts(t, srv, first, "batch_id="+batch); r.status != http.StatusOK {
		t.Errorf("after reset: %d, want 200", r.status)
	}
}
