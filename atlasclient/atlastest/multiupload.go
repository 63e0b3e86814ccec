package atlastest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"time"
)

// uploadRequest is the multiupload request body.
type uploadRequest struct {
	ProductType string       `json:"product_type"`
	FileURLs    []uploadFile `json:"file_urls"`
}

type uploadFile struct {
	FileURL    string `json:"file_url"`
	DocumentID string `json:"document_id"`
}

// uploadResult is one element of the array-shaped multiupload response.
type uploadResult struct {
	BatchID    string `json:"batch_id"`
	DocumentID string `json:"document_id"`
	FileUUID   string `json:"file_uuid"`
}

// serveMultiUpload answers POST /v1/docstream/multiupload and
// /v1/bulk/multiupload.
func (s *Simulator) serveMultiUpload(w http.ResponseWriter, r *http.Request, service string) {
	if !s.authorized(w, r, service) {
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	var req uploadRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxUploadBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "reading request body")
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if msg := req.problem(); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}

	b := s.addBatch(req.FileURLs, service)
	s.mu.Lock()
	shape := s.uploadShape
	s.mu.Unlock()
	if shape == UploadResponseObject {
		writeJSON(w, http.StatusCreated, map[string]string{"batch_id": b.id})
		return
	}
	out := make([]uploadResult, len(b.docs))
	for i, d := range b.docs {
		out[i] = uploadResult{BatchID: b.id, DocumentID: d.documentID, FileUUID: d.fileUUID}
	}
	writeJSON(w, http.StatusCreated, out)
}

// problem names what is missing from the request, or returns "".
func (req *uploadRequest) problem() string {
	if req.ProductType == "" {
		return "product_type is required"
	}
	if len(req.FileURLs) == 0 {
		return "file_urls is required"
	}
	for i, f := range req.FileURLs {
		if f.FileURL == "" {
			return fmt.Sprintf("file_urls[%d].file_url is required", i)
		}
		if f.DocumentID == "" {
			return fmt.Sprintf("file_urls[%d].document_id is required", i)
		}
	}
	return ""
}

// CreateBatch creates a batch holding documentIDs, as a successful
// multiupload would, and returns its batch id. The file URLs are
// placeholders. Duplicate ids are kept as separate documents.
func (s *Simulator) CreateBatch(documentIDs ...string) string {
	files := make([]uploadFile, len(documentIDs))
	for i, id := range documentIDs {
		files[i] = uploadFile{FileURL: "https://files.sim.invalid/" + url.PathEscape(id), DocumentID: id}
	}
	return s.addBatch(files, serviceDocstream).id
}

// CreateBulkBatch creates a batch of the bulk service holding
// documentIDs, as a successful /v1/bulk/multiupload would, and returns its
// batch id. Only /v1/bulk/extracts reads it, and it gets no callbacks.
func (s *Simulator) CreateBulkBatch(documentIDs ...string) string {
	files := make([]uploadFile, len(documentIDs))
	for i, id := range documentIDs {
		files[i] = uploadFile{FileURL: "https://files.sim.invalid/" + url.PathEscape(id), DocumentID: id}
	}
	return s.addBatch(files, serviceBulk).id
}

// addBatch stores a new batch of files, forgetting the least recently
// used batch when there are too many.
func (s *Simulator) addBatch(files []uploadFile, service string) *batch {
	now := s.now()
	stamp := now.UTC().Format("20060102150405")

	s.mu.Lock()
	defer s.mu.Unlock()
	docs := make([]batchDoc, len(files))
	for i, f := range files {
		docs[i] = batchDoc{
			documentID: f.DocumentID,
			fileURL:    f.FileURL,
			fileUUID:   newUUID(),
			readyAt:    now.Add(processingDelay(s.procMin, s.procMax, f.DocumentID)),
		}
	}
	b := &batch{docs: docs, service: service}
	for {
		b.id = fmt.Sprintf("BATCH-%05d-%s-%s", mrand.IntN(100000), randomLetters(5), stamp)
		if _, taken := s.batches[b.id]; !taken {
			break
		}
	}
	s.batches[b.id] = b
	s.scheduleCallbacks(b)
	b.use = s.batchOrder.PushBack(b.id)
	if s.batchOrder.Len() > maxBatches {
		oldest := s.batchOrder.Front()
		delete(s.batches, oldest.Value.(string))
		s.batchOrder.Remove(oldest)
	}
	return b
}

// batch looks a batch up and marks it used.
func (s *Simulator) batch(id string) (*batch, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.batches[id]
	if ok {
		s.batchOrder.MoveToBack(b.use)
	}
	return b, ok
}

// ReadyAt returns when, on the simulator's clock, the last document of
// batchID ends processing: from then on extracts answers every document
// with its file_data (or error_code).
func (s *Simulator) ReadyAt(batchID string) (time.Time, error) {
	b, ok := s.batch(batchID)
	if !ok {
		return time.Time{}, ErrUnknownBatch
	}
	var last time.Time
	for _, d := range b.docs {
		if d.readyAt.After(last) {
			last = d.readyAt
		}
	}
	return last, nil
}

// processingDelay is the delay of documentID for the range [lo, hi].
func processingDelay(lo, hi time.Duration, documentID string) time.Duration {
	if hi <= lo {
		return lo
	}
	sum := sha256.Sum256([]byte("delay:" + documentID))
	return lo + time.Duration(binary.BigEndian.Uint64(sum[:8])%uint64(hi-lo+1))
}

func randomLetters(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('A' + mrand.IntN(26))
	}
	return string(b)
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
