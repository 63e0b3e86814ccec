package caddyatlas

import (
	"context"
	"net/url"
	"testing"
)

// TestExtractsRequestURL: the upstream URL is built without a string to
// parse again; it must be what joining the endpoint and the path and
// encoding the query with url.Values gives, prefix and escapes included.
func TestExtractsRequestURL(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		q        extractsQuery
		want     string
		service  string
	}{
		{"http://atlas.test", extractsQuery{batchID: "B-1"}, "http://atlas.test/v1/docstream/extracts?batch_id=B-1", ""},
		{"https://atlas.test:8443/prefix", extractsQuery{batchID: "a b&c=d/é", page: 3, perPage: 50},
			"https://atlas.test:8443/prefix/v1/docstream/extracts?batch_id=a+b%26c%3Dd%2F%C3%A9&page=3&per_page=50", ""},
		{"http://atlas.test/a%2Fb", extractsQuery{batchID: "x", perPage: 6}, "http://atlas.test/a%2Fb/v1/docstream/extracts?batch_id=x&per_page=6", ""},
		{"https://atlas.test/prefix/", extractsQuery{batchID: "B-2", page: 3, perPage: 50},
			"https://atlas.test/prefix/v1/bulk/extracts?batch_id=B-2&page=3&per_page=50", ServiceBulk},
	} {
		u, err := url.Parse(tc.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := serviceName(tc.service)
		if err != nil {
			t.Fatal(err)
		}
		h := &Handler{endpoint: u, service: atlasServices[svc]}
		req := h.extractsRequest(context.Background(), tc.q)
		if got := req.URL.String(); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.endpoint, got, tc.want)
		}
		ref := u.JoinPath(h.service.extracts)
		vals := url.Values{"batch_id": {tc.q.batchID}}
		if tc.q.page > 0 {
			vals.Set("page", "3")
		}
		if tc.q.perPage > 0 {
			vals.Set("per_page", url.QueryEscape(req.URL.Query().Get("per_page")))
		}
		ref.RawQuery = vals.Encode()
		if req.URL.String() != ref.String() {
			t.Errorf("%s: got %s, url.Values gives %s", tc.endpoint, req.URL, ref)
		}
		if req.Host != u.Host || req.Header.Get("Accept") != "application/json" || req.Method != "GET" {
			t.Errorf("%s: host %q, accept %q, method %s", tc.endpoint, req.Host, req.Header.Get("Accept"), req.Method)
		}
	}
}
