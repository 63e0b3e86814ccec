// Command upstream is the benchmarks' fast stand-in for Atlas and for the
// app behind the callback route. It runs in its own process, so that the
// load scripts measure Caddy and not the upstream, and it answers from
// bytes computed at startup:
//
//	POST /v1/docstream/authtoken   a signed JWT (HS256, exp 24h ahead) with
//	                               expires_in, for the configured
//	                               Client-Id and Client-Secret
//	GET  /v1/docstream/extracts    batch_id=BENCH-6 or BENCH-50: a page of 6
//	                               or 50 documents from the simulator's
//	                               generator; the Token header must carry
//	                               the issued token (else 401)
//	GET  /_payload?docs=N          a callback payload of N documents (an
//	                               extracts page holding the whole batch)
//	GET  /_counts                  the callback sink's counts, as JSON
//	POST /_reset                   zeroes them
//	POST anything else             the callback sink: reads the body,
//	                               counts the request, its bytes and its
//	                               distinct X-Atlas-Callback-Id values
//
// Usage: upstream -listen 127.0.0.1:18091 -client-id ID -client-secret S
package main

import (
	"crypto/subtle"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
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

type server struct {
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
}

func main() {
	listen := flag.String("listen", "127.0.0.1:18091", "address to listen on (loopback)")
	clientID := flag.String("client-id", "bench-client", "the Client-Id authtoken accepts")
	clientSecret := flag.String("client-secret", "bench-secret", "the Client-Secret authtoken accepts")
	flag.Parse()

	s, err := newServer(*clientID, *clientSecret)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}

func newServer(clientID, clientSecret string) (*server, error) {
	sim := atlastest.New(atlastest.Options{
		ClientID: clientID, ClientSecret: clientSecret, TokenLifetime: 24 * time.Hour,
	})
	s := &server{
		clientID: clientID, clientSecret: clientSecret,
		pages:    map[string][]byte{},
		payloads: map[int][]byte{},
		ids:      map[string]struct{}{},
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
func (s *server) batchPayload(n int) ([]byte, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", docKinds[i%len(docKinds)], i)
	}
	return s.sim.BatchPayload(s.sim.CreateBatch(ids...))
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
		body, _ := json.Marshal(map[string]int64{
			"requests": s.requests.Load(), "bytes": s.bytes.Load(), "distinct_ids": int64(distinct),
		})
		writeBytes(w, http.StatusOK, body)
	case "/_reset":
		s.requests.Store(0)
		s.bytes.Store(0)
		s.idsMu.Lock()
		clear(s.ids)
		s.idsMu.Unlock()
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

func writeBytes(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
