package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
)

// Fetcher reads one page of a batch's extracts.
type Fetcher interface {
	// Page returns page (from 1) of batchID's extracts. A non-2xx answer
	// is a *StatusError; anything else (network, an undecodable body) is
	// a transient failure.
	Page(ctx context.Context, batchID string, page int) (PageResult, error)
}

// FetcherFunc adapts a function to Fetcher.
type FetcherFunc func(ctx context.Context, batchID string, page int) (PageResult, error)

// Page calls f.
func (f FetcherFunc) Page(ctx context.Context, batchID string, page int) (PageResult, error) {
	return f(ctx, batchID, page)
}

// PageResult is one page of extracts, its data elements kept raw so that
// a document's bytes are delivered exactly as Atlas sent them.
type PageResult struct {
	// Data holds the elements of data, byte for byte.
	Data []json.RawMessage
	// Page, TotalPages, TotalItems and HasNext are the page's members
	// (zero when absent).
	Page, TotalPages, TotalItems int
	HasNext                      bool
}

// StatusError is a non-2xx answer to an extracts request.
type StatusError struct {
	// API is the answer as atlasclient parses it.
	API *atlasclient.APIError
	// RetryAfter is the answer's Retry-After (0 if none or unparsable).
	RetryAfter time.Duration
}

// Error returns the APIError's message, with the Retry-After.
func (e *StatusError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v (retry after %s)", e.API, e.RetryAfter)
	}
	return e.API.Error()
}

// Unwrap returns the *atlasclient.APIError.
func (e *StatusError) Unwrap() error { return e.API }

// Extracts paths of the two Atlas services.
const (
	DocstreamExtracts = "/v1/docstream/extracts"
	BulkExtracts      = "/v1/bulk/extracts"
)

// Bounds on what HTTPFetcher reads.
const (
	// DefaultMaxPageBytes bounds an extracts answer (50 documents).
	DefaultMaxPageBytes = 32 << 20
	maxErrorBody        = 64 << 10
)

// HTTPFetcher reads extracts over HTTP. Client is the gateway's Atlas
// client: an *atlasclient.Transport with the managed token over the
// traced transport, so that every page is authenticated (and replayed
// once after a 401) and traced like the gateway's other Atlas calls.
// Redirects are never followed. It is safe for concurrent use.
type HTTPFetcher struct {
	// Endpoint is the Atlas base URL.
	Endpoint string
	// Path is DocstreamExtracts (the default) or BulkExtracts.
	Path string
	// Client makes the requests; nil means http.DefaultClient (which
	// sends no token).
	Client *http.Client
	// PerPage is the per_page asked for; 0 leaves Atlas's default (50).
	PerPage int
	// MaxPageBytes bounds an answer's body. Default DefaultMaxPageBytes.
	MaxPageBytes int64
	// Now reads the clock for a Retry-After given as a date. Default
	// time.Now.
	Now func() time.Time
}

// Page implements Fetcher.
func (f *HTTPFetcher) Page(ctx context.Context, batchID string, page int) (PageResult, error) {
	base, err := url.Parse(f.Endpoint)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return PageResult{}, fmt.Errorf("reconcile: invalid Atlas endpoint %q", f.Endpoint)
	}
	path := f.Path
	if path == "" {
		path = DocstreamExtracts
	}
	q := url.Values{"batch_id": {batchID}, "page": {strconv.Itoa(page)}}
	if f.PerPage > 0 {
		q.Set("per_page", strconv.Itoa(f.PerPage))
	}
	u := *base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath, u.RawQuery = "", q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), http.NoBody)
	if err != nil {
		return PageResult{}, err
	}
	req.Header.Set("Accept", "application/json")
	hc := http.DefaultClient
	if f.Client != nil {
		hc = f.Client
	}
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		return PageResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return PageResult{}, &StatusError{API: atlasclient.ParseAPIError(resp.StatusCode, body), RetryAfter: f.retryAfter(resp.Header.Get("Retry-After"))}
	}
	limit := f.MaxPageBytes
	if limit <= 0 {
		limit = DefaultMaxPageBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return PageResult{}, fmt.Errorf("reconcile: reading extracts of %q page %d: %w", batchID, page, err)
	}
	if int64(len(body)) > limit {
		return PageResult{}, fmt.Errorf("reconcile: extracts of %q page %d over %d bytes", batchID, page, limit)
	}
	return DecodePage(body)
}

// DecodePage decodes an extracts answer, keeping the data elements raw.
// It fails when the body is not an object or data is not an array.
func DecodePage(body []byte) (PageResult, error) {
	var p struct {
		Data       []json.RawMessage `json:"data"`
		Page       json.RawMessage   `json:"page"`
		TotalPages json.RawMessage   `json:"total_pages"`
		TotalItems json.RawMessage   `json:"total_items"`
		HasNext    json.RawMessage   `json:"has_next"`
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return PageResult{}, errors.New("reconcile: extracts answer is not a JSON object")
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return PageResult{}, fmt.Errorf("reconcile: decoding extracts: %w", err)
	}
	r := PageResult{Data: p.Data}
	// Lenient: a member of an unexpected type counts as absent.
	_ = json.Unmarshal(p.Page, &r.Page)
	_ = json.Unmarshal(p.TotalPages, &r.TotalPages)
	_ = json.Unmarshal(p.TotalItems, &r.TotalItems)
	_ = json.Unmarshal(p.HasNext, &r.HasNext)
	return r, nil
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func (f *HTTPFetcher) retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(n)*time.Second, 0)
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	return max(t.Sub(now()), 0)
}
