package caddyatlas

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// TestStoreErrorStatus checks the admin API's status for each error of a
// store, wrapped as the stores wrap them: a body sealed under a key the
// route no longer has is a 409 that says what to do, not a 500.
func TestStoreErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		says   string
	}{
		{fmt.Errorf("spool: callback cb-1: %w", seal.ErrUnknownKey), http.StatusConflict, "add it back as an encryption_key"},
		{fmt.Errorf("%w: callback cb-1: bad tag", spool.ErrCorrupt), http.StatusInternalServerError, "corrupt"},
		{queue.ErrNotFound, http.StatusNotFound, "no callback cb-1"},
		{queue.ErrDelivered, http.StatusConflict, "already delivered"},
		{fmt.Errorf("%w: nats: timeout", queue.ErrUnavailable), http.StatusServiceUnavailable, "unavailable"},
		{errors.New("disk on fire"), http.StatusInternalServerError, "disk on fire"},
	} {
		var ae caddy.APIError
		if err := storeError("cb-1", tc.err); !errors.As(err, &ae) || ae.HTTPStatus != tc.status || !strings.Contains(ae.Err.Error(), tc.says) {
			t.Errorf("storeError(%v) = %v (status %d), want %d saying %q", tc.err, err, ae.HTTPStatus, tc.status, tc.says)
		}
	}
}
