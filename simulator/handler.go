package simulator

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ServeHTTP answers the request from the simulator. It is terminal: next
// is never called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if h.sim == nil {
		return caddyhttp.Error(http.StatusInternalServerError, errors.New("atlas_simulator is not provisioned"))
	}
	if !h.Narrate {
		h.sim.ServeHTTP(w, r)
		return nil
	}
	rec := &recorder{ResponseWriter: w}
	h.sim.ServeHTTP(rec, r)
	narrate(r, rec)
	return nil
}
