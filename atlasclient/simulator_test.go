package atlasclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
	"github.com/caddy-atlas/caddy-atlas/atlasclient/atlastest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// These tests run the client against the simulator in atlastest, an
// independent implementation of the contract.

func simClient(t *testing.T, srv *atlastest.Server, secret string) (*atlasclient.Client, *atlasclient.TokenSource) {
	t.Helper()
	src, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
		Endpoint:     srv.URL,
		ClientID:     atlastest.DefaultClientID,
		ClientSecret: secret,
		MinBackoff:   time.Millisecond,
		MaxBackoff:   5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	c, err := atlasclient.NewClient(srv.URL, &http.Client{Transport: &atlasclient.Transport{Source: src}})
	if err != nil {
		t.Fatal(err)
	}
	return c, src
}

func decodeGeneric(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSimulatorUploadAndDocuments(t *testing.T) {
	for _, shape := range []string{atlastest.UploadResponseArray, atlastest.UploadResponseObject} {
		for _, form := range []string{atlastest.DocumentTypeString, atlastest.DocumentTypeObject} {
			t.Run(shape+"/"+form, func(t *testing.T) {
				srv := atlastest.NewServer(t, atlastest.Options{UploadResponseShape: shape, DocumentTypeForm: form})
				c, _ := simClient(t, srv, atlastest.DefaultClientSecret)

				var files []atlasclient.FileURL
				for i := range 5 {
					files = append(files, atlasclient.FileURL{
						FileURL:    fmt.Sprintf("https://bucket.example/doc-%d.pdf?sig=a&exp=1", i),
						DocumentID: fmt.Sprintf("doc-%d", i),
					})
				}
				res, err := c.Upload(context.Background(), "LOAN_APP", files)
				if err != nil {
					t.Fatalf("Upload: %v", err)
				}
				if res.BatchID == "" || (shape == atlastest.UploadResponseArray) != (len(res.Files) == 5) {
					t.Fatalf("upload result = %+v", res)
				}

				var n int
				for d, err := range c.Documents(context.Background(), res.BatchID, 2) {
					if err != nil {
						t.Fatalf("Documents: %v", err)
					}
					if d.DocumentID != files[n].DocumentID {
						t.Errorf("document %d is %q, want %q", n, d.DocumentID, files[n].DocumentID)
					}
					if d.FileData.DocumentType.IsObject() != (form == atlastest.DocumentTypeObject) {
						t.Errorf("%s: document_type %+v in form %s", d.DocumentID, d.FileData.DocumentType, form)
					}
					out, err := json.Marshal(d.FileData)
					if err != nil {
						t.Fatal(err)
					}
					want := srv.FileData(d.DocumentID)
					if diff := cmp.Diff(decodeGeneric(t, want), decodeGeneric(t, out)); diff != "" {
						t.Errorf("%s: file_data round trip (-sim +client):\n%s", d.DocumentID, diff)
					}
					n++
				}
				if n != 5 {
					t.Errorf("%d documents, want 5", n)
				}
				if got := srv.Calls(atlastest.EndpointExtracts); got != 3 {
					t.Errorf("extracts calls = %d, want 3 pages", got)
				}
				if got := srv.Calls(atlastest.EndpointAuthToken); got != 1 {
					t.Errorf("authtoken calls = %d, want 1", got)
				}

				payload, err := srv.BatchPayload(res.BatchID)
				if err != nil {
					t.Fatal(err)
				}
				var p atlasclient.ExtractsPage
				if err := json.Unmarshal(payload, &p); err != nil {
					t.Fatal(err)
				}
				out, _ := json.Marshal(p)
				if diff := cmp.Diff(decodeGeneric(t, payload), decodeGeneric(t, out)); diff != "" {
					t.Errorf("batch payload round trip (-sim +client):\n%s", diff)
				}
			})
		}
	}
}

func TestSimulatorRevocationReplays(t *testing.T) {
	srv := atlastest.NewServer(t, atlastest.Options{})
	c, _ := simClient(t, srv, atlastest.DefaultClientSecret)
	batch := srv.CreateBatch("doc-a")

	if _, err := c.Extracts(context.Background(), batch, 0, 0); err != nil {
		t.Fatal(err)
	}
	srv.RevokeAll()
	if _, err := c.Extracts(context.Background(), batch, 0, 0); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if a, e := srv.Calls(atlastest.EndpointAuthToken), srv.Calls(atlastest.EndpointExtracts); a != 2 || e != 3 {
		t.Errorf("authtoken calls %d, extracts calls %d; want 2 and 3", a, e)
	}
	if _, err := c.Extracts(context.Background(), "", 0, 0); !errors.Is(err, atlasclient.ErrBatchIDRequired) {
		t.Errorf("no batch id: %v, want ErrBatchIDRequired", err)
	}
}

func TestSimulatorAuthFailures(t *testing.T) {
	srv := atlastest.NewServer(t, atlastest.Options{})
	_, src := simClient(t, srv, atlastest.DefaultClientSecret)
	srv.FailAuth(2, http.StatusServiceUnavailable)
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatalf("Token after two 503s: %v", err)
	}
	if got := srv.Calls(atlastest.EndpointAuthToken); got != 3 {
		t.Errorf("authtoken calls = %d, want 3", got)
	}

	const wrong = "wrong-secret-value"
	_, bad := simClient(t, srv, wrong)
	_, err := bad.Token(context.Background())
	var ce *atlasclient.CredentialsError
	if !errors.As(err, &ce) || ce.StatusCode != http.StatusUnauthorized || bytes.Contains([]byte(err.Error()), []byte(wrong)) {
		t.Errorf("wrong secret: %v, want a *CredentialsError without the secret", err)
	}
}

// TestSimulatorConcurrentCallersShareOneToken: 200 concurrent requests on
// a cold cache cost one authtoken call, and 200 more in the refresh
// window cost exactly one more, all served meanwhile.
func TestSimulatorConcurrentCallersShareOneToken(t *testing.T) {
	clock := testutil.NewClock(time.Now()) // shared by the simulator and the token source
	srv := atlastest.NewServer(t, atlastest.Options{Now: clock.Now, TokenLifetime: time.Hour})
	batch := srv.CreateBatch("pan-1", "aadhaar-2")
	src, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
		Endpoint: srv.URL, ClientID: atlastest.DefaultClientID, ClientSecret: atlastest.DefaultClientSecret,
		Now: clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	c, err := atlasclient.NewClient(srv.URL, &http.Client{Transport: &atlasclient.Transport{Source: src}})
	if err != nil {
		t.Fatal(err)
	}
	burst := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for range 200 {
			wg.Go(func() {
				if _, err := c.Extracts(context.Background(), batch, 1, 50); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}

	burst()
	if n := srv.Calls("authtoken"); n != 1 {
		t.Fatalf("authtoken calls = %d for 200 cold callers, want 1", n)
	}
	clock.Advance(46 * time.Minute) // a quarter of the hour left: the refresh window
	burst()
	// Let the background refresh land; the count below fails if it never does.
	testutil.Poll(5*time.Second, 10*time.Millisecond, func() bool { return srv.Calls("authtoken") >= 2 })
	burst()
	if n := srv.Calls("authtoken"); n != 2 {
		t.Errorf("authtoken calls = %d after the refresh window, want 2", n)
	}
}

// TestSimulatorBulkToken: a source with BulkAuthTokenPath fetches its
// token from the bulk service, where it is good and a docstream token is
// not; a bad path is refused.
func TestSimulatorBulkToken(t *testing.T) {
	srv := atlastest.NewServer(t, atlastest.Options{})
	batch := srv.CreateBulkBatch("bulk-a", "bulk-b")
	extracts := func(src *atlasclient.TokenSource) int {
		t.Helper()
		hc := &http.Client{Transport: &atlasclient.Transport{Source: src}}
		resp, err := hc.Get(srv.URL + "/v1/bulk/extracts?batch_id=" + batch)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	source := func(path string) *atlasclient.TokenSource {
		t.Helper()
		src, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{
			Endpoint: srv.URL, AuthTokenPath: path,
			ClientID: atlastest.DefaultClientID, ClientSecret: atlastest.DefaultClientSecret,
			MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(src.Close)
		return src
	}
	if got := extracts(source(atlasclient.BulkAuthTokenPath)); got != http.StatusOK {
		t.Errorf("bulk extracts with a bulk token: %d, want 200", got)
	}
	if a, d := srv.Calls(atlastest.EndpointBulkAuthToken), srv.Calls(atlastest.EndpointAuthToken); a != 1 || d != 0 {
		t.Errorf("bulk authtoken calls %d, docstream %d; want 1 and 0", a, d)
	}
	// The default path is docstream's: its token is refused at bulk
	// (and replayed once with a fresh docstream token, refused again).
	if got := extracts(source("")); got != http.StatusUnauthorized {
		t.Errorf("bulk extracts with a docstream token: %d, want 401", got)
	}
	if d := srv.Calls(atlastest.EndpointAuthToken); d == 0 {
		t.Error("the default source did not call /v1/docstream/authtoken")
	}
	for _, bad := range []string{"v1/bulk/authtoken", "/v1/bulk/authtoken?x=1"} {
		if _, err := atlasclient.NewTokenSource(atlasclient.TokenOptions{Endpoint: srv.URL, AuthTokenPath: bad, ClientID: "c", ClientSecret: "s"}); err == nil {
			t.Errorf("authtoken path %q accepted", bad)
		}
	}
}
