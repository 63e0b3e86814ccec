// Package httpjson writes the routes' own answers in Atlas's JSON shape.
package httpjson

import (
	"encoding/json"
	"mime"
	"net/http"
	"strings"
)

// ErrorBody is Atlas's error shape, which the gateway's own errors share.
type ErrorBody struct {
	Error string `json:"error"`
}

// WriteError answers the client with a JSON error in Atlas's shape. It
// returns nil: the response is written, so there is nothing for Caddy's
// error handling to do.
func WriteError(w http.ResponseWriter, status int, msg string) error {
	body, _ := json.Marshal(ErrorBody{Error: msg})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// MethodNotAllowed answers a request whose method the route does not
// serve.
func MethodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return WriteError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}

// IsJSONMediaType reports whether a Content-Type value is
// application/json or a */*+json type, parameters allowed.
func IsJSONMediaType(v string) bool {
	switch v {
	case "":
		return false
	case "application/json": // the usual, without parsing
		return true
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return false
	}
	if mt == "application/json" {
		return true
	}
	slash := strings.IndexByte(mt, '/')
	return slash > 0 && strings.HasSuffix(mt[slash+1:], "+json") && len(mt[slash+1:]) > len("+json")
}
