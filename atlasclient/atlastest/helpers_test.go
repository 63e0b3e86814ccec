package atlastest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// jsonMap decodes the body as a JSON object.
func (r response) jsonMap(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request to srv. headers alternate names and values.
func do(t *testing.T, srv *Server, method, path, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// token obtains an access token with the default credentials.
func token(t *testing.T, srv *Server) string {
	t.Helper()
	r := do(t, srv, http.MethodPost, "/v1/docstream/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
	if r.status != http.StatusOK {
		t.Fatalf("authtoken: status %d, body %s", r.status, r.body)
	}
	tok, _ := r.jsonMap(t)["access_token"].(string)
	if tok == "" {
		t.Fatalf("authtoken: no access_token in %s", r.body)
	}
	return tok
}

// upload posts a multiupload for documentIDs with tok.
func upload(t *testing.T, srv *Server, tok string, documentIDs ...string) response {
	t.Helper()
	type file struct {
		FileURL    string `json:"file_url"`
		DocumentID string `json:"document_id"`
	}
	req := struct {
		ProductType string `json:"product_type"`
		FileURLs    []file `json:"file_urls"`
	}{ProductType: "LOAN_APP"}
	for _, id := range documentIDs {
		req.FileURLs = append(req.FileURLs, file{FileURL: "https://bucket.example/" + id + "?sig=x", DocumentID: id})
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, srv, http.MethodPost, "/v1/docstream/multiupload", string(b), "Token", tok, "Content-Type", "application/json")
}

// page is a decoded extracts response.
type page struct {
	Data []struct {
		DocumentID string                     `json:"document_id"`
		FileData   map[string]json.RawMessage `json:"file_data"`
	} `json:"data"`
	Page       int  `json:"page"`
	PerPage    int  `json:"per_page"`
	TotalPages int  `json:"total_pages"`
	TotalItems int  `json:"total_items"`
	HasNext    bool `json:"has_next"`
	HasPrev    bool `json:"has_prev"`
}

func extracts(t *testing.T, srv *Server, tok, query string) (response, page) {
	t.Helper()
	r := do(t, srv, http.MethodGet, "/v1/docstream/extracts?"+query, "", "Token", tok)
	var p page
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("extracts body %s: %v", r.body, err)
		}
	}
	return r, p
}
