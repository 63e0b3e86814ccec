package caddyatlas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
)

// serveUpload proxies POST {upload_path} to Atlas's multiupload endpoint.
// The body is capped, validated and buffered, so that the transport can
// replay it once on a 401; it is forwarded byte for byte.
func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, http.MethodPost)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !httpjson.IsJSONMediaType(ct) {
		return writeError(w, http.StatusUnsupportedMediaType, "the body must be JSON (Content-Type: application/json)")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.MaxUploadBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return writeError(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("the body is larger than %s", formatBytes(h.MaxUploadBody)))
		}
		if r.Context().Err() != nil {
			return nil // the client went away
		}
		return writeError(w, http.StatusBadRequest, "the body could not be read")
	}
	up, err := validateUpload(body)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	if h.app.batchesOn() {
		return h.serveRecordedUpload(w, r, body, up)
	}

	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.Timeout))
	defer cancel()
	u := h.endpoint.JoinPath(h.service.upload)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := h.exchange(ctx, r, routeUpload, req)
	if err != nil {
		return h.writeExchangeError(ctx, w, r, err)
	}
	defer resp.Body.Close()
	return h.relayResponse(w, resp)
}

// uploadRequest is what the gateway checks of an upload body. Unknown keys
// are allowed and forwarded untouched.
type uploadRequest struct {
	ProductType json.RawMessage   `json:"product_type"`
	FileURLs    []json.RawMessage `json:"file_urls"`
}

// uploadFile is one entry of file_urls.
type uploadFile struct {
	FileURL    json.RawMessage `json:"file_url"`
	DocumentID json.RawMessage `json:"document_id"`
}

// validatedUpload is what the ledger records of a valid upload body.
type validatedUpload struct {
	ProductType string
	DocumentIDs []string // of file_urls, in order
}

// validateUpload checks that body is a JSON object with a non-empty
// string product_type and a non-empty file_urls array whose entries each
// have a non-empty file_url and document_id, and returns the
// product_type and the document ids. The error names what is wrong.
func validateUpload(body []byte) (validatedUpload, error) {
	var up validatedUpload
	if !json.Valid(body) {
		return up, errors.New("the body is not valid JSON")
	}
	var req uploadRequest
	if err := json.Unmarshal(body, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field == "" {
			return up, errors.New("the body must be a JSON object")
		}
		if errors.As(err, &typeErr) {
			return up, fmt.Errorf("%s must be an array", typeErr.Field)
		}
		return up, errors.New("the body must be a JSON object")
	}
	var err error
	if up.ProductType, err = requireString("product_type", req.ProductType); err != nil {
		return up, err
	}
	if len(req.FileURLs) == 0 {
		return up, errors.New("file_urls is required and must be a non-empty array")
	}
	up.DocumentIDs = make([]string, len(req.FileURLs))
	for i, raw := range req.FileURLs {
		var f uploadFile
		if err := json.Unmarshal(raw, &f); err != nil {
			return up, fmt.Errorf("file_urls[%d] must be an object", i)
		}
		if _, err := requireString(fmt.Sprintf("file_urls[%d].file_url", i), f.FileURL); err != nil {
			return up, err
		}
		if up.DocumentIDs[i], err = requireString(fmt.Sprintf("file_urls[%d].document_id", i), f.DocumentID); err != nil {
			return up, err
		}
	}
	return up, nil
}

// requireString checks that raw is a non-blank JSON string, and returns
// it.
func requireString(name string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", fmt.Errorf("%s is required", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s must be a string", name)
	}
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s must not be empty", name)
	}
	return s, nil
}
