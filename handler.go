package caddyatlas

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
)

// ServeHTTP dispatches a request to the route its path names; any other
// request goes to the next handler untouched.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	path := r.URL.Path
	if c := h.Callback; c != nil {
		switch path {
		case c.AuthPath:
			return c.ServeAuth(w, r)
		case c.Path:
			return c.ServeCallback(w, r, next)
		}
	}
	switch {
	case h.extractsPath != "" && path == h.extractsPath:
		return h.serveExtracts(w, r)
	case h.uploadPath != "" && path == h.uploadPath:
		return h.serveUpload(w, r)
	case h.batchesPath != "" && (path == h.batchesPath || strings.HasPrefix(path, h.batchesPath+"/")):
		return h.serveBatches(w, r)
	}
	return next.ServeHTTP(w, r)
}

// writeError answers the client with a JSON error in Atlas's shape; see
// httpjson.WriteError.
func writeError(w http.ResponseWriter, status int, msg string) error {
	return httpjson.WriteError(w, status, msg)
}

// methodNotAllowed answers a request whose method the route does not serve.
func methodNotAllowed(w http.ResponseWriter, allow string) error {
	return httpjson.MethodNotAllowed(w, allow)
}
