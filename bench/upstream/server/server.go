// Package server is bench/upstream's handler, also used in-process by the
// Go benchmarks of package bench. See bench/upstream for what it serves.
package server

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
)

// docKinds are document id words the simulator's generator classifies
// (atlastest.Classify), so that pages mix the document types.
var docKinds = []string{"pan", "aadhaar", "passport", "gstin", "dl", "voter"}

// Server is the upstream's handler.
type Server struct {
	clientID, clientSecret string
	tokenBody              []byte // the authtoken response
	token                  string
	pages                  map[string][]byte // by batch_id
	sim                    *atlastest.Simulator

	payloadMu sync.Mutex
	payloads  map[int][]byte

	requests, bytes atomic.Int64
	idsMu           sync.Mutex
	ids             map[string]struct{}

	uploads   atomic.Int64 // multiupload requests accepted
	uploadSeq atomic.Int64 // batch ids
	uploadMu  sync.Mutex
	uploaded  map[string]struct{} // document ids of accepted uploads
}

// New returns the upstream's handler, accepting clientID and clientSecret
// at authtoken. It computes every page and the token before returning.
func New(clientID, clientSecret string) (*Server, error) {
	sim := atlastest.New(atlastest.Options{
		ClientID: clientID, ClientSecret: clientSecret, TokenLifetime: 24 * time.Hour,
	})
	s := &Server{
		clientID: clientID, clientSecret: clientSecret,
		pages:    map[string][]byte{},
		payloads: map[int][]byte{},
		ids:      map[string]struct{}{},
		uploaded: map[string]struct{}{},
		sim:      sim,
	}
	// The token: the simulator's own authtoken answer, a real JWT.
	req := httptest.NewRequest(http.MethodPost, "/v1/docstream/authtoken", nil)
	req.Header.Set("Client-Id", clientID)
	req.Header.Set("Client-Secret", clientSecret)
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("the simulator's authtoken answered %d: %s", rec.Code, rec.Body)
	}
	s.tokenBody = rec.Body.Bytes()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(s.tokenBody, &tok); err != nil || tok.AccessToken == "" {
		return nil, fmt.Errorf("the simulator's authtoken answer has no token: %s", s.tokenBody)
	}
	s.token = tok.AccessToken
	for _, n := range []int{6, 50} {
		page, err := s.batchPayload(n)
		if err != nil {
			return nil, err
		}
		s.pages["BENCH-"+strconv.Itoa(n)] = page
	}
	return s, nil
}

// batchPayload returns a page holding a whole batch of n documents.
func (s *Server) batchPayload(n int) ([]byte, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", docKinds[i%len(docKinds)], i)
	}
	return s.sim.BatchPayload(s.sim.CreateBatch(ids...))
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/docstream/authtoken":
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		idOK := subtle.ConstantTimeCompare([]byte(r.Header.Get("Client-Id")), []byte(s.clientID)) == 1
		secretOK := subtle.ConstantTimeCompare([]byte(r.Header.Get("Client-Secret")), []byte(s.clientSecret)) == 1
		if !idOK || !secretOK {
			writeBytes(w, http.StatusUnauthorized, []byte(`{"error_code":"401","error_message":"Invalid client credentials"}`))
			return
		}
		writeBytes(w, http.StatusOK, s.tokenBody)
	case "/v1/docstream/extracts":
		if r.Header.Get("Token") != s.token {
			writeBytes(w, http.StatusUnauthorized, []byte(`{"error":"Invalid or expired token"}`))
			return
		}
		page, ok := s.pages[r.URL.Query().Get("batch_id")]
		if !ok {
			writeBytes(w, http.StatusNotFound, []byte(`{"error":"batch not found"}`))
			return
		}
		writeBytes(w, http.StatusOK, page)
	case "/v1/docstream/multiupload":
		s.upload(w, r)
	case "/_payload":
		n, err := strconv.Atoi(r.URL.Query().Get("docs"))
		if err != nil || n < 1 || n > 1000 {
			http.Error(w, "docs must be 1 to 1000", http.StatusBadRequest)
			return
		}
		s.payloadMu.Lock()
		p, ok := s.payloads[n]
		if !ok {
			p, err = s.batchPayload(n)
			s.payloads[n] = p
		}
		s.payloadMu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeBytes(w, http.StatusOK, p)
	case "/_counts":
		s.idsMu.Lock()
		distinct := len(s.ids)
		s.idsMu.Unlock()
		s.uploadMu.Lock()
		uploadedDocs := len(s.uploaded)
		s.uploadMu.Unlock()
		body, _ := json.Marshal(map[string]int64{
			"requests": s.requests.Load(), "bytes": s.bytes.Load(), "distinct_ids": int64(distinct),
			"uploads": s.uploads.Load(), "uploaded_documents": int64(uploadedDocs),
		})
		writeBytes(w, http.StatusOK, body)
	case "/_reset":
		s.requests.Store(0)
		s.bytes.Store(0)
		s.idsMu.Lock()
		clear(s.ids)
		s.idsMu.Unlock()
		s.uploads.Store(0)
		s.uploadMu.Lock()
		clear(s.uploaded)
		s.uploadMu.Unlock()
		writeBytes(w, http.StatusOK, []byte(`{}`))
	default:
		if r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		if id := r.Header.Get("X-Atlas-Callback-Id"); id != "" {
			s.idsMu.Lock()
			s.ids[id] = struct{}{}
			s.idsMu.Unlock()
		}
		writeBytes(w, http.StatusOK, []byte("ok"))
	}
}

// upload answers a multiupload as Atlas does (201, one element per file
// with the batch id, the document id and a file_uuid), with a batch id
// of its own per request, and counts the upload and its document ids.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("Token") != s.token {
		writeBytes(w, http.StatusUnauthorized, []byte(`{"error":"Invalid or expired token"}`))
		return
	}
	var req struct {
		FileURLs []struct {
			DocumentID string `json:"document_id"`
		} `json:"file_urls"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<20)).Decode(&req); err != nil || len(req.FileURLs) == 0 {
		writeBytes(w, http.StatusBadRequest, []byte(`{"error":"file_urls is required"}`))
		return
	}
	n := s.uploadSeq.Add(1)
	batch := "BATCH-" + strconv.FormatInt(n, 10) + "-BENCH-20260309081408"
	type item struct {
		BatchID    string `json:"batch_id"`
		DocumentID string `json:"document_id"`
		FileUUID   string `json:"file_uuid"`
	}
	items := make([]item, len(req.FileURLs))
	s.uploadMu.Lock()
	for i, f := range req.FileURLs {
		items[i] = item{BatchID: batch, DocumentID: f.DocumentID, FileUUID: fmt.Sprintf("%08d-%04d", n, i)}
		s.uploaded[f.DocumentID] = struct{}{}
	}
	s.uploadMu.Unlock()
	s.uploads.Add(1)
	body, _ := json.Marshal(items)
	writeBytes(w, http.StatusCreated, body)
}

func writeBytes(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Token returns the access token authtoken hands out.
func (s *Server) Token() string { return s.token }

// Payload returns a callback payload of n documents, as GET /_payload does.
func (s *Server) Payload(n int) ([]byte, error) { return s.batchPayload(n) }
