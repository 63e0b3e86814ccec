package caddyatlas

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// batchAnswer is a batch as GET {batches_path}/{id} answers it: states
// and times, never a field value or a file URL.
type batchAnswer struct {
	BatchID     string           `json:"batch_id"`
	State       string           `json:"state"`
	Overdue     bool             `json:"overdue,omitempty"`
	ProductType string           `json:"product_type,omitempty"`
	UploadedAt  time.Time        `json:"uploaded_at"`
	CompletedAt *time.Time       `json:"completed_at,omitempty"`
	Counts      batchCounts      `json:"counts"`
	Documents   []documentAnswer `json:"documents"`
}

// batchCounts counts a batch's documents by state.
type batchCounts struct {
	Pending  int `json:"pending"`
	Received int `json:"received"`
	Failed   int `json:"failed"`
}

// documentAnswer is one document of a batchAnswer.
type documentAnswer struct {
	DocumentID string     `json:"document_id"`
	State      string     `json:"state"`
	Source     string     `json:"source,omitempty"`
	ReceivedAt *time.Time `json:"received_at,omitempty"`
	ErrorCode  string     `json:"error_code,omitempty"`
}

// answerOf is b as the status endpoint answers it, at now.
func (h *Handler) answerOf(b *ledger.Batch, now time.Time) batchAnswer {
	return answerOf(b, now, h.app.Batches.policy().PollAfter)
}

// answerOf is b as the status endpoint and the admin API answer it, at
// now, overdue past pollAfter.
func answerOf(b *ledger.Batch, now time.Time, pollAfter time.Duration) batchAnswer {
	pending, received, failed := b.Counts()
	a := batchAnswer{
		BatchID:     b.ID,
		State:       b.State.String(),
		Overdue:     b.Overdue(now, pollAfter),
		ProductType: b.ProductType,
		UploadedAt:  b.Uploaded,
		Counts:      batchCounts{Pending: pending, Received: received, Failed: failed},
		Documents:   make([]documentAnswer, 0, len(b.Documents)),
	}
	if b.State == ledger.StateComplete && !b.Finished.IsZero() {
		t := b.Finished
		a.CompletedAt = &t
	}
	for _, d := range b.Documents {
		da := documentAnswer{DocumentID: d.ID, State: d.State.String(), Source: string(d.Source), ErrorCode: d.ErrorCode}
		if !d.At.IsZero() {
			t := d.At
			da.ReceivedAt = &t
		}
		a.Documents = append(a.Documents, da)
	}
	return a
}

// serveBatches serves GET {batches_path}/{batch_id}[?wait=30s], the
// status of one batch, and GET {batches_path}?state=...&limit=N&cursor=...,
// a page of batches, newest first.
func (h *Handler) serveBatches(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return methodNotAllowed(w, "GET, HEAD")
	}
	store := h.app.waitLedger(r.Context())
	if store == nil {
		w.Header().Set("Retry-After", "1")
		return writeError(w, http.StatusServiceUnavailable, "the ledger of batches is not open yet; retry in a moment")
	}
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, h.batchesPath), "/")
	if id == "" {
		return h.serveBatchList(w, r, store)
	}
	if strings.Contains(id, "/") {
		return writeError(w, http.StatusNotFound, "no such batch")
	}
	wait := time.Duration(0)
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := caddy.ParseDuration(v)
		if err != nil || d < 0 {
			return writeError(w, http.StatusBadRequest, "wait must be a duration such as 30s")
		}
		wait = min(d, h.app.Batches.maxWait())
	}
	b, err := h.waitBatch(r, store, id, wait)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return writeError(w, http.StatusNotFound, "no such batch")
	case err != nil && r.Context().Err() != nil:
		return nil // the client went away
	case err != nil:
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	return writeJSON(w, http.StatusOK, h.answerOf(b, time.Now()))
}

// waitBatch returns the batch once it is finished, or as it is when wait
// has passed.
func (h *Handler) waitBatch(r *http.Request, store ledger.Store, id string, wait time.Duration) (*ledger.Batch, error) {
	if wait <= 0 {
		return store.Get(r.Context(), id)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	// Watch first, then read, so that no change falls between.
	changes, err := store.Watch(ctx, id)
	if err != nil {
		return nil, err
	}
	for {
		b, err := store.Get(r.Context(), id)
		if err != nil || b.State != ledger.StateProcessing {
			return b, err
		}
		select {
		case _, ok := <-changes:
			if !ok {
				return store.Get(r.Context(), id)
			}
		case <-ctx.Done():
			return store.Get(r.Context(), id)
		}
	}
}

// batchList is the answer to GET {batches_path}.
type batchList struct {
	Batches []batchAnswer `json:"batches"`
	Next    string        `json:"next,omitempty"`
}

// serveBatchList serves a page of batches.
func (h *Handler) serveBatchList(w http.ResponseWriter, r *http.Request, store ledger.Store) error {
	return serveBatchPage(w, r, store, h.app.Batches.policy().PollAfter)
}

// serveBatchPage answers a page of the batches of store, selected by the
// query's state, limit and cursor, newest first.
func serveBatchPage(w http.ResponseWriter, r *http.Request, store ledger.Store, pollAfter time.Duration) error {
	q := r.URL.Query()
	var state ledger.State
	switch s := q.Get("state"); s {
	case "":
		state = ledger.StateAny
	case "processing":
		state = ledger.StateProcessing
	case "complete":
		state = ledger.StateComplete
	case "expired":
		state = ledger.StateExpired
	case "overdue":
		state = ledger.StateOverdue
	default:
		return writeError(w, http.StatusBadRequest, "state must be processing, complete, expired or overdue")
	}
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > ledger.MaxListLimit {
			return writeError(w, http.StatusBadRequest, "limit must be a whole number from 1 to "+strconv.Itoa(ledger.MaxListLimit))
		}
		limit = n
	}
	page, err := store.List(r.Context(), ledger.ListQuery{State: state, Limit: limit, Cursor: q.Get("cursor")})
	if errors.Is(err, ledger.ErrInvalid) {
		return writeError(w, http.StatusBadRequest, "cursor is not one this endpoint gave")
	}
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	now := time.Now()
	out := batchList{Batches: make([]batchAnswer, 0, len(page.Batches)), Next: page.Next}
	for _, b := range page.Batches {
		out.Batches = append(out.Batches, answerOf(b, now, pollAfter))
	}
	return writeJSON(w, http.StatusOK, out)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, err = w.Write(append(body, '\n'))
	return err
}
