package atlasclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// newTestClient returns a client for fa that authenticates through a
// Transport.
func newTestClient(t *testing.T, fa *fakeAtlas) *Client {
	t.Helper()
	s := newSource(t, fa, testutil.NewClock(testutil.Epoch), nil)
	c, err := NewClient(fa.URL+"/", &http.Client{Transport: &Transport{Source: s}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// queryLog records the query of each API request.
type queryLog struct {
	mu      sync.Mutex
	queries []url.Values
}

func (l *queryLog) add(r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queries = append(l.queries, r.URL.Query())
}

func (l *queryLog) get() []url.Values {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]url.Values(nil), l.queries...)
}

func TestExtracts(t *testing.T) {
	var log queryLog
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		if r.Method != http.MethodGet || r.URL.Path != "/v1/docstream/extracts" || r.Header.Get("Token") != "tok-1" {
			t.Errorf("request = %s %s, Token %q", r.Method, r.URL.Path, r.Header.Get("Token"))
		}
		io.WriteString(w, realisticPage)
	})
	c := newTestClient(t, fa)

	p, err := c.Extracts(context.Background(), "BATCH-69469-BBRSS-20260309081408", 2, 25)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Data) != 7 || p.TotalItems != 7 {
		t.Errorf("page = %d documents, total %d", len(p.Data), p.TotalItems)
	}
	if _, err := c.Extracts(context.Background(), "B", 0, 0); err != nil {
		t.Fatal(err)
	}
	want := []url.Values{
		{"batch_id": {"BATCH-69469-BBRSS-20260309081408"}, "page": {"2"}, "per_page": {"25"}},
		{"batch_id": {"B"}},
	}
	if diff := cmp.Diff(want, log.get()); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}

func TestExtractsErrors(t *testing.T) {
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("batch_id") {
		case "":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error": "batch_id is required"}`)
		case "garbage":
			io.WriteString(w, `{"data": `)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	c := newTestClient(t, fa)

	_, err := c.Extracts(context.Background(), "", 0, 0)
	var apiErr *APIError
	if !errors.Is(err, ErrBatchIDRequired) || !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Errorf("no batch id: %v, want an *APIError matching ErrBatchIDRequired", err)
	}
	if _, err := c.Extracts(context.Background(), "nope", 0, 0); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Errorf("unknown batch: %v, want a 404 *APIError", err)
	}
	if _, err := c.Extracts(context.Background(), "garbage", 0, 0); err == nil {
		t.Error("truncated body: no error")
	}
}

func TestExtractsUnauthorizedWithoutTransport(t *testing.T) {
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		unauthorized(w)
	})
	c, err := NewClient(fa.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Extracts(context.Background(), "B", 0, 0); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Extracts: %v, want ErrUnauthorized", err)
	}
}

// pagedAtlas serves total documents, perPage a page, with the pagination
// fields edit computes (by default the honest ones).
func pagedAtlas(t *testing.T, total int, edit func(page int, p map[string]any)) (*fakeAtlas, *queryLog) {
	log := &queryLog{}
	fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		q := r.URL.Query()
		page, _ := strconv.Atoi(q.Get("page"))
		perPage, _ := strconv.Atoi(q.Get("per_page"))
		if page == 0 {
			page = 1
		}
		if perPage == 0 {
			perPage = 50
		}
		pages := (total + perPage - 1) / perPage
		data := []any{}
		for i := (page - 1) * perPage; i < min(page*perPage, total); i++ {
			data = append(data, map[string]any{
				"document_id": fmt.Sprintf("doc-%d", i),
				"file_data":   map[string]any{"document_type": "PAN"},
			})
		}
		p := map[string]any{
			"data": data, "page": page, "per_page": perPage, "total_pages": pages,
			"total_items": total, "has_next": page < pages, "has_prev": page > 1,
		}
		if edit != nil {
			edit(page, p)
		}
		json.NewEncoder(w).Encode(p)
	})
	return fa, log
}

func collect(t *testing.T, c *Client, perPage int) ([]string, error) {
	t.Helper()
	var ids []string
	for d, err := range c.Documents(context.Background(), "B", perPage) {
		if err != nil {
			return ids, err
		}
		ids = append(ids, d.DocumentID)
	}
	return ids, nil
}

func TestDocumentsAcrossPages(t *testing.T) {
	fa, log := pagedAtlas(t, 5, nil)
	ids, err := collect(t, newTestClient(t, fa), 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"doc-0", "doc-1", "doc-2", "doc-3", "doc-4"}, ids); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
	qs := log.get()
	if len(qs) != 3 || qs[2].Get("page") != "3" || qs[2].Get("per_page") != "2" {
		t.Errorf("queries = %v, want pages 1 to 3 of 2", qs)
	}
}

func TestDocumentsStopsEarly(t *testing.T) {
	fa, log := pagedAtlas(t, 10, nil)
	c := newTestClient(t, fa)
	for range c.Documents(context.Background(), "B", 2) {
		break
	}
	if n := len(log.get()); n != 1 {
		t.Errorf("%d pages fetched after breaking on the first document, want 1", n)
	}
}

func TestDocumentsGuards(t *testing.T) {
	tests := []struct {
		name    string
		total   int
		edit    func(page int, p map[string]any)
		want    int  // documents yielded
		pages   int  // requests made
		wantErr bool // an error ends the iteration
	}{
		{"has_next forever, total_pages honest", 4, func(page int, p map[string]any) { p["has_next"] = true }, 4, 2, false},
		{"has_next forever, empty page", 4, func(page int, p map[string]any) {
			p["has_next"], p["total_pages"] = true, 0
		}, 4, 3, false},
		{"page ignored", 4, func(page int, p map[string]any) {
			p["page"], p["has_next"], p["total_pages"] = 1, true, 0
		}, 2, 2, true},
		{"error mid-way", 6, func(page int, p map[string]any) {
			if page == 2 {
				p["data"] = "broken"
			}
		}, 2, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fa, log := pagedAtlas(t, tt.total, tt.edit)
			ids, err := collect(t, newTestClient(t, fa), 2)
			if (err != nil) != tt.wantErr {
				t.Errorf("error = %v, want error %v", err, tt.wantErr)
			}
			if len(ids) != tt.want || len(log.get()) != tt.pages {
				t.Errorf("%d documents in %d requests, want %d in %d", len(ids), len(log.get()), tt.want, tt.pages)
			}
		})
	}
}

func TestUpload(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   UploadResult
	}{
		{"object", http.StatusOK, `{"batch_id": "BATCH-69469-BBRSS-20260309081408", "status": "queued"}`,
			UploadResult{BatchID: "BATCH-69469-BBRSS-20260309081408"}},
		{"array", http.StatusCreated, `[
			{"batch_id": "BATCH-1", "document_id": "d1", "file_uuid": "u1"},
			{"batch_id": "BATCH-1", "document_id": "d2", "file_uuid": "u2"}]`,
			UploadResult{BatchID: "BATCH-1", Files: []UploadedFile{{"BATCH-1", "d1", "u1"}, {"BATCH-1", "d2", "u2"}}}},
	}
	files := []FileURL{
		{FileURL: "https://bucket.s3.amazonaws.com/a.pdf?X-Amz-Signature=1&X-Amz-Expires=900", DocumentID: "d1"},
		{FileURL: "https://bucket.s3.amazonaws.com/b.png", DocumentID: "d2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var got map[string]any
			var contentType string
			fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/v1/docstream/multiupload" {
					t.Errorf("request = %s %s", r.Method, r.URL.Path)
				}
				mu.Lock()
				contentType = r.Header.Get("Content-Type")
				json.NewDecoder(r.Body).Decode(&got)
				mu.Unlock()
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			res, err := newTestClient(t, fa).Upload(context.Background(), "LOAN_APP", files)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, *res); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			mu.Lock()
			defer mu.Unlock()
			wantBody := map[string]any{
				"product_type": "LOAN_APP",
				"file_urls": []any{
					map[string]any{"file_url": files[0].FileURL, "document_id": "d1"},
					map[string]any{"file_url": files[1].FileURL, "document_id": "d2"},
				},
			}
			if diff := cmp.Diff(wantBody, got); diff != "" {
				t.Errorf("request body (-want +got):\n%s", diff)
			}
			if contentType != "application/json" {
				t.Errorf("Content-Type = %q", contentType)
			}
		})
	}
}

func TestUploadErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		is     error
	}{
		{"missing parameters", 400, `{"error": "file_urls is required"}`, nil},
		{"unauthorized", 401, `{"error": "Invalid or expired token"}`, ErrUnauthorized},
		{"empty", 201, ``, nil},
		{"empty array", 201, `[]`, nil},
		{"no batch id", 200, `{"status": "ok"}`, nil},
		{"html", 200, `<html></html>`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fa := newFakeAtlas(t, nil, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := newTestClient(t, fa).Upload(context.Background(), "LOAN_APP", nil)
			if err == nil {
				t.Fatal("Upload succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not match %v", err, tt.is)
			}
		})
	}
}

func TestNewClient(t *testing.T) {
	for _, bad := range []string{"", "ftp://h", "//h", "http://h/?q=1"} {
		if _, err := NewClient(bad, nil); err == nil {
			t.Errorf("NewClient(%q) succeeded", bad)
		}
	}
	c, err := NewClient("http://h/prefix/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := endpointURL(c.endpoint, "/v1/docstream/extracts", url.Values{"batch_id": {"B 1"}}); got != "http://h/prefix/v1/docstream/extracts?batch_id=B+1" {
		t.Errorf("URL = %q", got)
	}
}
