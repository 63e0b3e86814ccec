package atlastest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

var (
	batchIDRe = regexp.MustCompile(`^BATCH-[0-9]{5}-[A-Z]{5}-[0-9]{14}$`)
	uuidRe    = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

func TestAuthToken(t *testing.T) {
	srv := NewServer(t, Options{ClientID: "acme", ClientSecret: "s3cret", TokenLifetime: 90 * time.Minute})
	tests := []struct {
		name     string
		method   string
		headers  []string
		status   int
		wantBody map[string]any // exact, when set
	}{
		{"no credentials", http.MethodPost, nil, 400, map[string]any{"error": "Missing Client-Id or Client-Secret"}},
		{"no secret", http.MethodPost, []string{"Client-Id", "acme"}, 400, map[string]any{"error": "Missing Client-Id or Client-Secret"}},
		{"no id", http.MethodPost, []string{"Client-Secret", "s3cret"}, 400, map[string]any{"error": "Missing Client-Id or Client-Secret"}},
		{"wrong secret", http.MethodPost, []string{"Client-Id", "acme", "Client-Secret", "nope"}, 401, map[string]any{"error_code": "401", "error_message": "Invalid client credentials"}},
		{"wrong id", http.MethodPost, []string{"Client-Id", "other", "Client-Secret", "s3cret"}, 401, map[string]any{"error_code": "401", "error_message": "Invalid client credentials"}},
		{"default credentials not accepted", http.MethodPost, []string{"Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret}, 401, nil},
		{"wrong method", http.MethodGet, []string{"Client-Id", "acme", "Client-Secret", "s3cret"}, 405, map[string]any{"error": "method not allowed"}},
		{"ok", http.MethodPost, []string{"Client-Id", "acme", "Client-Secret", "s3cret"}, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, tt.method, "/v1/docstream/authtoken", "", tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			m := r.jsonMap(t)
			if tt.wantBody != nil {
				if diff := cmp.Diff(tt.wantBody, m); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
			if tt.status != 200 {
				return
			}
			if m["expires_in"] != float64(5400) {
				t.Errorf("expires_in = %v, want 5400", m["expires_in"])
			}
			var claims jwt.RegisteredClaims
			tok, _, err := jwt.NewParser().ParseUnverified(m["access_token"].(string), &claims)
			if err != nil {
				t.Fatalf("access_token is not a JWT: %v", err)
			}
			if tok.Method.Alg() != "HS256" {
				t.Errorf("alg = %s, want HS256", tok.Method.Alg())
			}
			if claims.Subject != "acme" || claims.IssuedAt == nil || claims.ExpiresAt == nil || claims.ID == "" {
				t.Errorf("claims missing sub/iat/exp/jti: %+v", claims)
			}
			if got := claims.ExpiresAt.Sub(claims.IssuedAt.Time); got != 90*time.Minute {
				t.Errorf("exp - iat = %v, want 90m", got)
			}
		})
	}
}

func TestDefaultCredentials(t *testing.T) {
	srv := NewServer(t, Options{})
	_ = token(t, srv) // fails the test unless demo-client/demo-secret work
}

func TestTokenValidation(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now, TokenLifetime: 10 * time.Second})
	other := NewServer(t, Options{Now: clock.Now})
	batch := srv.CreateBatch("pan-1")
	good := token(t, srv)

	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": DefaultClientID, "exp": clock.Now().Add(time.Hour).Unix(), "gen": 0, "iss": tokenIssuer}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		headers []string
		status  int
	}{
		{"valid", []string{"Token", good}, 200},
		{"valid with spaces", []string{"Token", " " + good + " "}, 200},
		{"missing", nil, 401},
		{"garbage", []string{"Token", "not-a-jwt"}, 401},
		{"bearer prefix", []string{"Token", "Bearer " + good}, 401},
		{"authorization header only", []string{"Authorization", "Bearer " + good}, 401},
		{"other simulator's key", []string{"Token", token(t, other)}, 401},
		{"alg none", []string{"Token", none}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, http.MethodGet, "/v1/docstream/extracts?batch_id="+batch, "", tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if tt.status == 401 {
				if diff := cmp.Diff(map[string]any{"error": "Invalid or expired token"}, r.jsonMap(t)); diff != "" {
					t.Errorf("body (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestTokenExpiry(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	srv := NewServer(t, Options{Now: clock.Now, TokenLifetime: 10 * time.Second})
	batch := srv.CreateBatch("a")
	tok := token(t, srv)

	clock.Advance(9 * time.Second)
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 200 {
		t.Fatalf("after 9s: status %d, want 200", r.status)
	}
	clock.Advance(time.Second)
	if r, _ := extracts(t, srv, tok, "batch_id="+batch); r.status != 401 {
		t.Fatalf("after 10s: status %d, want 401", r.status)
	}

	srv.SetTokenLifetime(2 * time.Second)
	r := do(t, srv, http.MethodPost, "/v1/docstream/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
	if got := r.jsonMap(t)["expires_in"]; got != float64(2) {
		t.Errorf("expires_in after SetTokenLifetime(2s) = %v, want 2", got)
	}
	srv.SetTokenLifetime(0)
	r = do(t, srv, http.MethodPost, "/v1/docstream/authtoken", "", "Client-Id", DefaultClientID, "Client-Secret", DefaultClientSecret)
	if got := r.jsonMap(t)["expires_in"]; got != float64(10) {
		t.Errorf("expires_in after SetTokenLifetime(0) = %v, want the configured 10", got)
	}
}

func TestRevokeAll(t *testing.T) {
	srv := NewServer(t, Options{})
	batch := srv.CreateBatch("a")
	old := token(t, srv)
	srv.RevokeAll()
	if r, _ := extracts(t, srv, old, "batch_id="+batch); r.status != 401 {
		t.Fatalf("revoked token: status %d, want 401", r.status)
	}
	fresh := token(t, srv)
	if r, _ := extracts(t, srv, fresh, "batch_id="+batch); r.status != 200 {
		t.Fatalf("token issued after RevokeAll: status %d, want 200", r.status)
	}
	if r, _ := extracts(t, srv, old, "batch_id="+batch); r.status != 401 {
		t.Fatalf("revoked token after a new issue: status %d, want 401", r.status)
	}
}

func TestMultiUploadErrors(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	json := "application/json"
	tests := []struct {
		name    string
		method  string
		body    string
		headers []string
		status  int
		errMsg  string
	}{
		{"no token", "POST", `{"product_type":"LOAN_APP","file_urls":[{"file_url":"u","document_id":"d"}]}`, []string{"Content-Type", json}, 401, "Invalid or expired token"},
		{"bad token", "POST", `{}`, []string{"Token", "x", "Content-Type", json}, 401, "Invalid or expired token"},
		{"not json content type", "POST", `{}`, []string{"Token", tok, "Content-Type", "text/plain"}, 415, "Content-Type must be application/json"},
		{"no content type", "POST", `{}`, []string{"Token", tok}, 415, "Content-Type must be application/json"},
		{"invalid json", "POST", `{"product_type":`, []string{"Token", tok, "Content-Type", json}, 400, "invalid JSON body"},
		{"empty body", "POST", ``, []string{"Token", tok, "Content-Type", json}, 400, "invalid JSON body"},
		{"missing product_type", "POST", `{"file_urls":[{"file_url":"u","document_id":"d"}]}`, []string{"Token", tok, "Content-Type", json}, 400, "product_type is required"},
		{"missing file_urls", "POST", `{"product_type":"LOAN_APP"}`, []string{"Token", tok, "Content-Type", json}, 400, "file_urls is required"},
		{"empty file_urls", "POST", `{"product_type":"LOAN_APP","file_urls":[]}`, []string{"Token", tok, "Content-Type", json}, 400, "file_urls is required"},
		{"empty file_url", "POST", `{"product_type":"LOAN_APP","file_urls":[{"file_url":"u","document_id":"d"},{"file_url":"","document_id":"e"}]}`, []string{"Token", tok, "Content-Type", json}, 400, "file_urls[1].file_url is required"},
		{"missing document_id", "POST", `{"product_type":"LOAN_APP","file_urls":[{"file_url":"u"}]}`, []string{"Token", tok, "Content-Type", json}, 400, "file_urls[0].document_id is required"},
		{"wrong method", "GET", ``, []string{"Token", tok}, 405, "method not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, srv, tt.method, "/v1/docstream/multiupload", tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if diff := cmp.Diff(map[string]any{"error": tt.errMsg}, r.jsonMap(t)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("body too large", func(t *testing.T) {
		big := `{"product_type":"LOAN_APP","file_urls":[{"file_url":"` + strings.Repeat("x", maxUploadBody) + `","document_id":"d"}]}`
		r := do(t, srv, "POST", "/v1/docstream/multiupload", big, "Token", tok, "Content-Type", json)
		if r.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status = %d, want 413", r.status)
		}
	})
}

func TestMultiUploadShapes(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	ids := []string{"loan-1-pan", "loan-1-aadhaar", "loan-1-pan"}

	r := upload(t, srv, tok, ids...)
	if r.status != http.StatusCreated {
		t.Fatalf("status = %d, want 201 (body %s)", r.status, r.body)
	}
	var arr []struct {
		BatchID    string `json:"batch_id"`
		DocumentID string `json:"document_id"`
		FileUUID   string `json:"file_uuid"`
	}
	if err := json.Unmarshal(r.body, &arr); err != nil {
		t.Fatalf("array shape: %v (body %s)", err, r.body)
	}
	if len(arr) != len(ids) {
		t.Fatalf("got %d results, want %d", len(arr), len(ids))
	}
	uuids := map[string]bool{}
	for i, e := range arr {
		if e.BatchID != arr[0].BatchID || !batchIDRe.MatchString(e.BatchID) {
			t.Errorf("[%d] batch_id = %q", i, e.BatchID)
		}
		if e.DocumentID != ids[i] {
			t.Errorf("[%d] document_id = %q, want %q", i, e.DocumentID, ids[i])
		}
		if !uuidRe.MatchString(e.FileUUID) || uuids[e.FileUUID] {
			t.Errorf("[%d] file_uuid = %q (not a fresh v4 UUID)", i, e.FileUUID)
		}
		uuids[e.FileUUID] = true
	}
	if _, p := extracts(t, srv, tok, "batch_id="+arr[0].BatchID); p.TotalItems != 3 {
		t.Errorf("uploaded batch holds %d documents, want 3 (duplicates kept)", p.TotalItems)
	}

	srv.SetUploadResponseShape(UploadResponseObject)
	r = upload(t, srv, tok, "x")
	if r.status != http.StatusCreated {
		t.Fatalf("object shape: status = %d, want 201", r.status)
	}
	m := r.jsonMap(t)
	if len(m) != 1 || !batchIDRe.MatchString(fmt.Sprint(m["batch_id"])) {
		t.Errorf("object shape body = %s", r.body)
	}

	objSrv := NewServer(t, Options{UploadResponseShape: UploadResponseObject})
	r = upload(t, objSrv, token(t, objSrv), "x")
	if _, ok := r.jsonMap(t)["batch_id"]; !ok {
		t.Errorf("Options.UploadResponseShape object: body = %s", r.body)
	}
}

func TestBatchIDsUnique(t *testing.T) {
	clock := testutil.NewClock(testutil.Epoch)
	s := New(Options{Now: clock.Now})
	seen := map[string]bool{}
	for i := 0; i < 3000; i++ {
		id := s.CreateBatch("d")
		if !batchIDRe.MatchString(id) {
			t.Fatalf("batch id %q does not look like BATCH-69469-BBRSS-20260309081408", id)
		}
		if !strings.HasSuffix(id, "-20260309081408") {
			t.Fatalf("batch id %q is not stamped with the injected clock", id)
		}
		if seen[id] {
			t.Fatalf("duplicate batch id %q", id)
		}
		seen[id] = true
	}
}

func TestExtractsErrors(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	batch := srv.CreateBatch("a", "b")
	tests := []struct {
		name   string
		query  string
		status int
		errMsg string
	}{
		{"missing batch_id", "", 400, "batch_id is required"},
		{"empty batch_id", "batch_id=", 400, "batch_id is required"},
		{"unknown batch", "batch_id=BATCH-00000-AAAAA-20260101000000", 404, "batch not found"},
		{"page zero", "batch_id=" + batch + "&page=0", 400, "page must be a positive integer"},
		{"page negative", "batch_id=" + batch + "&page=-1", 400, "page must be a positive integer"},
		{"page not a number", "batch_id=" + batch + "&page=two", 400, "page must be a positive integer"},
		{"per_page zero", "batch_id=" + batch + "&per_page=0", 400, "per_page must be a positive integer"},
		{"per_page not a number", "batch_id=" + batch + "&per_page=1.5", 400, "per_page must be a positive integer"},
		{"bad page before unknown batch", "batch_id=nope&page=x", 400, "page must be a positive integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := extracts(t, srv, tok, tt.query)
			if r.status != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if diff := cmp.Diff(map[string]any{"error": tt.errMsg}, r.jsonMap(t)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		r := do(t, srv, http.MethodPost, "/v1/docstream/extracts?batch_id="+batch, "", "Token", tok)
		if r.status != 405 || r.header.Get("Allow") != "GET" {
			t.Fatalf("status = %d, Allow = %q; want 405 GET", r.status, r.header.Get("Allow"))
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		r := do(t, srv, http.MethodGet, "/v1/docstream/nope", "")
		if r.status != 404 {
			t.Fatalf("status = %d, want 404", r.status)
		}
	})
}

func TestExtractsPagination(t *testing.T) {
	srv := NewServer(t, Options{})
	tok := token(t, srv)
	ids := make([]string, 120)
	for i := range ids {
		ids[i] = fmt.Sprintf("doc-%03d", i)
	}
	batch := srv.CreateBatch(ids...)
	empty := srv.CreateBatch()

	tests := []struct {
		name                                string
		batch, query                        string
		first                               int // index of the first document, -1 for none
		n, page, perPage, totalPages, total int
		hasNext, hasPrev                    bool
	}{
		{"defaults", batch, "", 0, 50, 1, 50, 3, 120, true, false},
		{"page 2", batch, "&page=2", 50, 50, 2, 50, 3, 120, true, true},
		{"last page", batch, "&page=3", 100, 20, 3, 50, 3, 120, false, true},
		{"past the end", batch, "&page=4", -1, 0, 4, 50, 3, 120, false, true},
		{"far past the end", batch, "&page=9223372036854775807", -1, 0, 9223372036854775807, 50, 3, 120, false, true},
		{"per_page capped", batch, "&per_page=200", 0, 50, 1, 50, 3, 120, true, false},
		{"per_page 51 capped", batch, "&per_page=51&page=3", 100, 20, 3, 50, 3, 120, false, true},
		{"per_page 7", batch, "&per_page=7&page=2", 7, 7, 2, 7, 18, 120, true, true},
		{"per_page 7 last", batch, "&per_page=7&page=18", 119, 1, 18, 7, 18, 120, false, true},
		{"per_page 120", batch, "&per_page=120", 0, 50, 1, 50, 3, 120, true, false},
		{"per_page 1", batch, "&per_page=1&page=120", 119, 1, 120, 1, 120, 120, false, true},
		{"empty batch", empty, "", -1, 0, 1, 50, 0, 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, p := extracts(t, srv, tok, "batch_id="+tt.batch+tt.query)
			if r.status != 200 {
				t.Fatalf("status = %d (body %s)", r.status, r.body)
			}
			if !strings.Contains(string(r.body), `"data":[`) {
				t.Errorf("data is not an array: %s", r.body)
			}
			got := []any{len(p.Data), p.Page, p.PerPage, p.TotalPages, p.TotalItems, p.HasNext, p.HasPrev}
			want := []any{tt.n, tt.page, tt.perPage, tt.totalPages, tt.total, tt.hasNext, tt.hasPrev}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("[len(data) page per_page total_pages total_items has_next has_prev] (-want +got):\n%s", diff)
			}
			for i, d := range p.Data {
				if d.DocumentID != ids[tt.first+i] {
					t.Errorf("data[%d].document_id = %q, want %q", i, d.DocumentID, ids[tt.first+i])
				}
			}
		})
	}

	t.Run("walking all pages yields every document once in order", func(t *testing.T) {
		var got []string
		for pg := 1; ; pg++ {
			_, p := extracts(t, srv, tok, fmt.Sprintf("batch_id=%s&per_page=13&page=%d", batch, pg))
			for _, d := range p.Data {
				got = append(got, d.DocumentID)
			}
			if !p.HasNext {
				break
			}
		}
		if diff := cmp.Diff(ids, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

func TestExtractsDeterministic(t *testing.T) {
	ids := []string{"loan-7-pan", "loan-7-aadhaar", "x1", "x2", "blurry-1"}
	get := func(opts Options) []byte {
		srv := NewServer(t, opts)
		_, p := extracts(t, srv, token(t, srv), "batch_id="+srv.CreateBatch(ids...))
		b, err := json.Marshal(p.Data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := get(Options{}), get(Options{})
	if string(a) != string(b) {
		t.Errorf("two simulators extract the same ids differently:\n%s\n%s", a, b)
	}
	if string(New(Options{}).FileData("x1")) == string(New(Options{}).FileData("x2")) {
		t.Error("different ids extract identically")
	}

	obj := New(Options{DocumentTypeForm: DocumentTypeObject})
	var fd map[string]json.RawMessage
	if err := json.Unmarshal(obj.FileData("loan-7-pan"), &fd); err != nil {
		t.Fatal(err)
	}
	var dt struct {
		Value string  `json:"value"`
		Score float64 `json:"confidence_score"`
	}
	if err := json.Unmarshal(fd["document_type"], &dt); err != nil || dt.Value != "PAN" || dt.Score <= 0 || dt.Score > 1 {
		t.Errorf("object document_type = %s (%v)", fd["document_type"], err)
	}
	obj.SetDocumentTypeForm(DocumentTypeString)
	if err := json.Unmarshal(obj.FileData("loan-7-pan"), &fd); err != nil {
		t.Fatal(err)
	}
	if string(fd["document_type"]) != `"PAN"` {
		t.Errorf("string document_type = %s", fd["document_type"])
	}
}
