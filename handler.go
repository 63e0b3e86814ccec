package caddyatlas

import (
	"encoding/json"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ServeHTTP dispatches a request to the route its path names; any other
// request goes to the next handler untouched.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	path := r.URL.Path
	if c := h.Callback; c != nil {
		switch path {
		case c.AuthPath:
			return c.serveAuth(w, r)
		case c.Path:
			return c.serveCallback(w, r, next)
		}
	}
	switch {
	case h.extractsPath != "" && path == h.extractsPath:
		return h.serveExtracts(w, r)
	case h.uploadPath != "" && path == h.uploadPath:
		return h.serveUpload(w, r)
	}
	return next.ServeHTTP(w, r)
}

// errorBody is Atlas's error shape, which the gateway's own errors share.
type errorBody struct {
	Error string `json:"error"`
}

// writeError answers the client with a JSON error in Atlas's shape. It
// returns nil: the response is written, so there is nothing for Caddy's
// error handling to do.
func writeError(w http.ResponseWriter, status int, msg string) error {
	body, _ := json.Marshal(errorBody{Error: msg})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// methodNotAllowed answers a request whose method the route does not serve.
func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}
