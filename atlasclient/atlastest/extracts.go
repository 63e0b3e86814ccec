package atlastest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

const (
	defaultPerPage = 50
	maxPerPage     = 50
)

// ErrUnknownBatch is returned for a batch id the simulator does not hold.
var ErrUnknownBatch = errors.New("atlastest: batch not found")

// extractsPage is the extracts response, and a callback's payload.
type extractsPage struct {
	Data       []extractItem `json:"data"`
	Page       int           `json:"page"`
	PerPage    int           `json:"per_page"`
	TotalPages int           `json:"total_pages"`
	TotalItems int           `json:"total_items"`
	HasNext    bool          `json:"has_next"`
	HasPrev    bool          `json:"has_prev"`
}

type extractItem struct {
	DocumentID string          `json:"document_id"`
	FileData   json.RawMessage `json:"file_data,omitempty"` // nil for a pending document listed without it
}

// serveExtracts answers GET /v1/docstream/extracts and /v1/bulk/extracts.
func (s *Simulator) serveExtracts(w http.ResponseWriter, r *http.Request, service string) {
	if !s.authorized(w, r, service) {
		return
	}
	q := r.URL.Query()
	batchID := q.Get("batch_id")
	if batchID == "" {
		writeError(w, http.StatusBadRequest, "batch_id is required")
		return
	}
	page, ok := positiveParam(q.Get("page"), 1)
	if !ok {
		writeError(w, http.StatusBadRequest, "page must be a positive integer")
		return
	}
	perPage, ok := positiveParam(q.Get("per_page"), defaultPerPage)
	if !ok {
		writeError(w, http.StatusBadRequest, "per_page must be a positive integer")
		return
	}
	perPage = min(perPage, maxPerPage)

	b, ok := s.batch(batchID)
	if !ok || b.service != service {
		writeError(w, http.StatusNotFound, "batch not found")
		return
	}
	writeJSON(w, http.StatusOK, s.page(b, page, perPage))
}

// positiveParam parses a positive integer query parameter; empty means def.
func positiveParam(v string, def int) (int, bool) {
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// page builds one page of a batch's extraction.
func (s *Simulator) page(b *batch, page, perPage int) extractsPage {
	now := s.now()
	s.mu.Lock()
	objectType := s.docTypeForm == DocumentTypeObject
	pending := s.pending
	s.mu.Unlock()

	total := len(b.docs)
	totalPages := (total + perPage - 1) / perPage
	p := extractsPage{
		Data:       []extractItem{},
		Page:       page,
		PerPage:    perPage,
		TotalPages: totalPages,
		TotalItems: total,
		HasNext:    page < totalPages,
		HasPrev:    page > 1,
	}
	if page > totalPages {
		return p
	}
	start := (page - 1) * perPage
	end := min(start+perPage, total)
	p.Data = appendItems(p.Data, b.docs[start:end], now, pending, objectType)
	return p
}

// appendItems appends the extracts items of docs at now: those done with
// their file_data, the others as pending says.
func appendItems(data []extractItem, docs []batchDoc, now time.Time, pending string, objectType bool) []extractItem {
	for _, d := range docs {
		if now.Before(d.readyAt) {
			switch pending {
			case PendingOmitted:
			case PendingEmpty:
				data = append(data, extractItem{DocumentID: d.documentID, FileData: json.RawMessage(`{}`)})
			default:
				data = append(data, extractItem{DocumentID: d.documentID})
			}
			continue
		}
		data = append(data, extractItem{DocumentID: d.documentID, FileData: fileData(d.documentID, objectType)})
	}
	return data
}

// FileData returns the file_data the simulator extracts for documentID, in
// the current document_type form. It is deterministic: the same id always
// yields the same bytes.
func (s *Simulator) FileData(documentID string) json.RawMessage {
	s.mu.Lock()
	objectType := s.docTypeForm == DocumentTypeObject
	s.mu.Unlock()
	return fileData(documentID, objectType)
}

// BatchPayload returns the exact JSON a callback for batchID carries: an
// extracts response holding every document of the batch on page 1 (those
// still processing as extracts shows them).
func (s *Simulator) BatchPayload(batchID string) ([]byte, error) {
	b, ok := s.batch(batchID)
	if !ok {
		return nil, ErrUnknownBatch
	}
	total := len(b.docs)
	p := s.page(b, 1, max(total, 1))
	p.PerPage = total
	return json.Marshal(p)
}
