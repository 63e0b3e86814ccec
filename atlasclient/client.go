package atlasclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
)

// Bounds on how much of a response is read.
const (
	maxErrorBody  = 64 << 10
	maxUploadBody = 4 << 20
)

// Client calls the Atlas Docstream API. It is safe for concurrent use.
type Client struct {
	endpoint *url.URL
	hc       *http.Client
}

// NewClient returns a client for the Atlas base URL endpoint. httpClient
// normally has a *Transport, which authenticates the requests; nil means
// http.DefaultClient. Redirects are never followed: the token must not
// travel to wherever a redirect points.
func NewClient(endpoint string, httpClient *http.Client) (*Client, error) {
	u, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	return &Client{endpoint: u, hc: withoutRedirects(httpClient)}, nil
}

// Extracts fetches one page of the extraction results of a batch. A page
// or perPage of 0 (or less) omits the parameter, so that Atlas applies its
// default (page 1, 50 per page). A non-2xx answer is an *APIError.
func (c *Client) Extracts(ctx context.Context, batchID string, page, perPage int) (*ExtractsPage, error) {
	q := url.Values{}
	if batchID != "" {
		q.Set("batch_id", batchID)
	}
	if page > 0 {
		q.Set("page", strconv.Itoa(page))
	}
	if perPage > 0 {
		q.Set("per_page", strconv.Itoa(perPage))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpointURL(c.endpoint, "/v1/docstream/extracts", q), http.NoBody)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer closeResponse(resp)
	var p ExtractsPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return nil, fmt.Errorf("atlas: decoding extracts: %w", err)
	}
	return &p, nil
}

// Documents iterates over every document of a batch, fetching pages of
// perPage documents (0 for the Atlas default) in turn. An error is yielded
// once, with a zero Document, and ends the iteration. It stops after the
// page whose has_next is false, or which is empty, or which is the last of
// total_pages, so that a server that never says it is done cannot keep it
// going.
func (c *Client) Documents(ctx context.Context, batchID string, perPage int) iter.Seq2[Document, error] {
	return func(yield func(Document, error) bool) {
		for page := 1; ; page++ {
			p, err := c.Extracts(ctx, batchID, page, perPage)
			if err != nil {
				yield(Document{}, err)
				return
			}
			if p.Page != 0 && p.Page != page {
				yield(Document{}, fmt.Errorf("atlas: asked for page %d of batch %q, got page %d", page, batchID, p.Page))
				return
			}
			for _, d := range p.Data {
				if !yield(d, nil) {
					return
				}
			}
			if !p.HasNext || len(p.Data) == 0 || (p.TotalPages > 0 && page >= p.TotalPages) {
				return
			}
		}
	}
}

// Upload asks Atlas to fetch and process files as a new batch of
// productType (such as LOAN_APP). Atlas fetches the files from their URLs
// itself. A non-2xx answer is an *APIError.
func (c *Client) Upload(ctx context.Context, productType string, files []FileURL) (*UploadResult, error) {
	if files == nil {
		files = []FileURL{}
	}
	body, err := encode(struct {
		ProductType string    `json:"product_type"`
		FileURLs    []FileURL `json:"file_urls"`
	}{productType, files})
	if err != nil {
		return nil, err
	}
	// A *bytes.Reader body gets GetBody, so the request can be replayed.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpointURL(c.endpoint, "/v1/docstream/multiupload", nil), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer closeResponse(resp)
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxUploadBody))
	if err != nil {
		return nil, fmt.Errorf("atlas: reading upload response: %w", err)
	}
	return parseUploadResult(b)
}

// parseUploadResult accepts {"batch_id": "..."} and
// [{"batch_id", "document_id", "file_uuid"}, ...]. The batch id of the
// array shape is that of its first element.
func parseUploadResult(b []byte) (*UploadResult, error) {
	b = bytes.TrimSpace(b)
	var res UploadResult
	switch {
	case len(b) > 0 && b[0] == '[':
		if err := json.Unmarshal(b, &res.Files); err != nil {
			return nil, fmt.Errorf("atlas: decoding upload response: %w", err)
		}
		if len(res.Files) > 0 {
			res.BatchID = res.Files[0].BatchID
		}
	case len(b) > 0 && b[0] == '{':
		var o struct {
			BatchID string `json:"batch_id"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return nil, fmt.Errorf("atlas: decoding upload response: %w", err)
		}
		res.BatchID = o.BatchID
	default:
		return nil, errors.New("atlas: upload response is neither an object nor an array")
	}
	if res.BatchID == "" {
		return nil, errors.New("atlas: upload response has no batch_id")
	}
	return &res, nil
}

// do sends req and turns a non-2xx answer into an *APIError.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return resp, nil
	}
	defer closeResponse(resp)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return nil, ParseAPIError(resp.StatusCode, body)
}

// closeResponse drains a little of what is left of the body, so that the
// connection can be reused, and closes it.
func closeResponse(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
}

// withoutRedirects returns a copy of hc (http.DefaultClient when nil) that
// does not follow redirects: the token and the credentials must never
// travel to wherever a redirect points, and a POST must not be resent.
// A redirect comes back to the caller as the response it is.
func withoutRedirects(hc *http.Client) *http.Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}
