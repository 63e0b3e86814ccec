package atlastest

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Endpoint names, as used by Calls, FailNext, DelayNext and LastHeaders.
const (
	EndpointAuthToken   = "authtoken"
	EndpointMultiUpload = "multiupload"
	EndpointExtracts    = "extracts"

	// The bulk service's endpoints, under BulkPrefix.
	EndpointBulkAuthToken   = "bulk/authtoken"
	EndpointBulkMultiUpload = "bulk/multiupload"
	EndpointBulkExtracts    = "bulk/extracts"
)

// Services: the docstream API, with callbacks, and the bulk service, with
// polling only.
const (
	serviceDocstream = "docstream"
	serviceBulk      = "bulk"
)

// Upload response shapes (Options.UploadResponseShape).
const (
	// UploadResponseArray answers multiupload with
	// [{"batch_id", "document_id", "file_uuid"}, ...]. The default.
	UploadResponseArray = "array"
	// UploadResponseObject answers multiupload with {"batch_id": "..."}.
	UploadResponseObject = "object"
)

// Forms of file_data.document_type (Options.DocumentTypeForm).
const (
	// DocumentTypeString makes document_type a plain string. The default.
	DocumentTypeString = "string"
	// DocumentTypeObject makes document_type a {value, confidence_score}
	// object like every other field.
	DocumentTypeObject = "object"
)

// Forms of a document still processing in an extracts answer
// (Options.PendingDocuments).
const (
	// PendingListed lists a document still processing as
	// {"document_id": "..."} with no file_data key. The default.
	PendingListed = "listed"
	// PendingEmpty lists it as {"document_id": "...", "file_data": {}}.
	PendingEmpty = "empty"
	// PendingOmitted leaves it out of data: a page then holds fewer than
	// per_page items, while total_items and total_pages still count every
	// document of the batch.
	PendingOmitted = "omitted"
)

// Defaults.
const (
	DefaultClientID      = "demo-client"
	DefaultClientSecret  = "demo-secret"
	DefaultTokenLifetime = time.Hour
)

// APIPrefix is the path prefix of the Atlas endpoints.
const APIPrefix = "/v1/docstream/"

// BulkPrefix is the path prefix of the bulk service's endpoints.
const BulkPrefix = "/v1/bulk/"

const (
	maxBatches    = 10000
	maxDeliveries = 1000
	maxIssued     = 1000
	maxUploadBody = 10 << 20
)

// Options configure a Simulator. The zero value is usable.
type Options struct {
	// ClientID and ClientSecret are the credentials authtoken accepts.
	// When both are empty they default to DefaultClientID and
	// DefaultClientSecret.
	ClientID, ClientSecret string

	// TokenLifetime is the lifetime of issued tokens, reported as
	// expires_in in seconds. Default DefaultTokenLifetime.
	TokenLifetime time.Duration

	// Now is the clock used to issue and check tokens and to stamp batch
	// ids. Default time.Now.
	Now func() time.Time

	// CallbackHTTPClient makes the requests of DeliverCallback. Default
	// an http.Client with a 30s timeout.
	CallbackHTTPClient *http.Client

	// UploadResponseShape is UploadResponseArray (default) or
	// UploadResponseObject. Other values mean the default.
	UploadResponseShape string

	// DocumentTypeForm is DocumentTypeString (default) or
	// DocumentTypeObject. Other values mean the default.
	DocumentTypeForm string

	// OneLiveToken keeps one live token per client: issuing a token
	// revokes the client's previous ones, which then answer 401 like an
	// expired token. Atlas does not document whether it does this; a
	// fleet of gateways that each fetch their own token would revoke
	// each other's.
	OneLiveToken bool

	// ProcessingDelay is how long, on the clock Now, a document takes to
	// process after its upload: until then extracts lists it as pending
	// (see PendingDocuments) and it has no file_data. When
	// ProcessingDelayMax is above it, each document takes a value in
	// [ProcessingDelay, ProcessingDelayMax] derived from its document id
	// (see ProcessingDelayFor). Zero (the default) processes every
	// document the moment it is uploaded.
	ProcessingDelay, ProcessingDelayMax time.Duration

	// PendingDocuments is how extracts shows a document still
	// processing: PendingListed (default), PendingEmpty or
	// PendingOmitted. Other values mean the default.
	PendingDocuments string

	// RateLimits limits the requests a client may make in any second of
	// the clock Now, by endpoint name; the key "" limits the requests to
	// every endpoint together. A request over the limit answers 429
	// {"error": "Too many requests"} with Retry-After in whole seconds
	// (at least 1) until the window admits it. A client is the Client-Id
	// of an authtoken request and the subject of the Token elsewhere;
	// requests over the limit do not count towards it. Atlas does not
	// document its limits.
	RateLimits map[string]int

	// AutoCallback, when set with a Target.CallbackURL, makes the
	// simulator deliver callbacks by itself when a batch's documents are
	// done (see AutoCallback). A Simulator made by New must then be
	// closed (Close) to stop delivering.
	AutoCallback *AutoCallback
}

// Simulator is an http.Handler simulating the Atlas Docstream API. All its
// methods are safe for concurrent use. See the package documentation.
type Simulator struct {
	clientID, clientSecret string
	now                    func() time.Time
	callbackClient         *http.Client
	key                    []byte
	defaultLifetime        time.Duration
	defaultOneLive         bool
	defaultProcMin         time.Duration
	defaultProcMax         time.Duration
	defaultPending         string
	done                   chan struct{}
	closeOnce              sync.Once
	// loops counts the callback loops running, for close to wait for.
	loops             sync.WaitGroup
	ctx               context.Context // ends at Close
	cancel            context.CancelFunc
	defaultAuto       *AutoCallback
	defaultRateLimits map[string]int
	cbMu              sync.Mutex // serializes FlushCallbacks

	mu          sync.Mutex
	lifetime    time.Duration
	uploadShape string
	docTypeForm string
	generation  int64
	oneLive     bool
	procMin     time.Duration
	procMax     time.Duration
	pending     string
	latest      map[string]string // client id -> jti of its last token
	calls       map[string]int
	lastHeaders map[string]http.Header
	lastQueries map[string]url.Values
	faults      map[string][]fault
	delays      map[string][]delay
	batches     map[string]*batch
	batchOrder  *list.List // of batch ids, least recently used first
	deliveries  []Delivery
	issued      []string

	auto      *AutoCallback // nil: no automatic callbacks
	scheduled []*scheduledCallback
	cbOrder   uint64 // of scheduled callbacks, for ties
	cbSeq     int    // the last callback's sequence number
	cbGen     int    // bumped by Reset
	cbRunning bool   // callbackLoop is running
	events    []CallbackEvent
	cbCounts  CallbackCounts

	rateLimits map[string]int             // endpoint ("" for all) -> requests per second per client
	admitted   map[rateKey][]time.Time    // admitted requests within the last second
	requests   map[string][]RequestRecord // endpoint -> the last maxRequests requests
}

type fault struct {
	n          int
	status     int
	retryAfter time.Duration // sent as Retry-After when positive
}

type delay struct {
	n int
	d time.Duration
}

type batch struct {
	id      string
	service string // serviceDocstream or serviceBulk
	docs    []batchDoc
	use     *list.Element // in Simulator.batchOrder
}

type batchDoc struct {
	documentID, fileURL, fileUUID string
	readyAt                       time.Time // when its processing ends, on the simulator's clock
}

// New returns a simulator configured by opts.
func New(opts Options) *Simulator {
	s := &Simulator{
		clientID:       opts.ClientID,
		clientSecret:   opts.ClientSecret,
		now:            opts.Now,
		callbackClient: opts.CallbackHTTPClient,
		key:            make([]byte, 32),
		done:           make(chan struct{}),
		calls:          map[string]int{},
		lastHeaders:    map[string]http.Header{},
		lastQueries:    map[string]url.Values{},
		faults:         map[string][]fault{},
		delays:         map[string][]delay{},
		batches:        map[string]*batch{},
		latest:         map[string]string{},
		batchOrder:     list.New(),
	}
	if s.clientID == "" && s.clientSecret == "" {
		s.clientID, s.clientSecret = DefaultClientID, DefaultClientSecret
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.callbackClient == nil {
		s.callbackClient = &http.Client{Timeout: 30 * time.Second}
	}
	s.defaultLifetime = opts.TokenLifetime
	if s.defaultLifetime <= 0 {
		s.defaultLifetime = DefaultTokenLifetime
	}
	s.lifetime = s.defaultLifetime
	s.defaultOneLive = opts.OneLiveToken
	s.oneLive = opts.OneLiveToken
	s.uploadShape = normalizeUploadShape(opts.UploadResponseShape)
	s.docTypeForm = normalizeDocTypeForm(opts.DocumentTypeForm)
	s.defaultProcMin, s.defaultProcMax = normalizeProcessingDelay(opts.ProcessingDelay, opts.ProcessingDelayMax)
	s.procMin, s.procMax = s.defaultProcMin, s.defaultProcMax
	s.defaultPending = normalizePending(opts.PendingDocuments)
	s.pending = s.defaultPending
	s.defaultAuto = copyAutoCallback(opts.AutoCallback)
	s.auto = copyAutoCallback(s.defaultAuto)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.defaultRateLimits = maps.Clone(opts.RateLimits)
	s.rateLimits = maps.Clone(opts.RateLimits)
	s.admitted = map[rateKey][]time.Time{}
	s.requests = map[string][]RequestRecord{}
	_, _ = rand.Read(s.key) // never fails since Go 1.24
	return s
}

func normalizeUploadShape(shape string) string {
	if shape == UploadResponseObject {
		return shape
	}
	return UploadResponseArray
}

func normalizeDocTypeForm(form string) string {
	if form == DocumentTypeObject {
		return form
	}
	return DocumentTypeString
}

func normalizePending(form string) string {
	switch form {
	case PendingEmpty, PendingOmitted:
		return form
	}
	return PendingListed
}

// normalizeProcessingDelay makes a negative delay zero and a maximum
// below the minimum the minimum.
func normalizeProcessingDelay(lo, hi time.Duration) (time.Duration, time.Duration) {
	lo = max(lo, 0)
	return lo, max(hi, lo)
}

// KnownEndpoint reports whether name is an endpoint name (EndpointAuthToken,
// EndpointMultiUpload, EndpointExtracts or their bulk twins).
func KnownEndpoint(name string) bool {
	switch name {
	case EndpointAuthToken, EndpointMultiUpload, EndpointExtracts,
		EndpointBulkAuthToken, EndpointBulkMultiUpload, EndpointBulkExtracts:
		return true
	}
	return false
}

// allEndpoints are the endpoint names, docstream's first.
var allEndpoints = []string{EndpointAuthToken, EndpointMultiUpload, EndpointExtracts,
	EndpointBulkAuthToken, EndpointBulkMultiUpload, EndpointBulkExtracts}

// serviceOf splits an endpoint name into its service and its operation
// (authtoken, multiupload or extracts).
func serviceOf(endpoint string) (service, op string) {
	if op, ok := strings.CutPrefix(endpoint, serviceBulk+"/"); ok {
		return serviceBulk, op
	}
	return serviceDocstream, endpoint
}

// endpointForPath maps a request path to an Atlas endpoint name.
func endpointForPath(path string) (string, bool) {
	if name, ok := strings.CutPrefix(path, BulkPrefix); ok {
		name = serviceBulk + "/" + name
		return name, KnownEndpoint(name)
	}
	name, ok := strings.CutPrefix(path, APIPrefix)
	if !ok {
		return "", false
	}
	switch name {
	case EndpointAuthToken, EndpointMultiUpload, EndpointExtracts:
		return name, true
	}
	return "", false
}

// ServeHTTP serves the Atlas endpoints and the /_sim/ control endpoints.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, ControlPrefix) {
		s.serveControl(w, r)
		return
	}
	endpoint, ok := endpointForPath(r.URL.Path)
	if !ok {
		writeError(w, http.StatusNotFound, "not found")
		return
	}

	d, f := s.begin(endpoint, r)
	if d > 0 && !s.wait(w, r, d) {
		return
	}
	if f != nil {
		if f.retryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(f.retryAfter))
		}
		s.fail(w, endpoint, f.status)
		return
	}
	if wait, ok := s.admit(endpoint, r); !ok {
		w.Header().Set("Retry-After", retryAfterSeconds(wait))
		writeError(w, http.StatusTooManyRequests, msgRateLimited)
		return
	}

	service, op := serviceOf(endpoint)
	method := http.MethodPost
	if op == EndpointExtracts {
		method = http.MethodGet
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}

	switch op {
	case EndpointAuthToken:
		s.serveAuthToken(w, r, service)
	case EndpointMultiUpload:
		s.serveMultiUpload(w, r, service)
	case EndpointExtracts:
		s.serveExtracts(w, r, service)
	}
}

// begin counts a call to endpoint, records its headers and takes the
// pending delay and fault that apply to it, endpoint-specific ones first.
func (s *Simulator) begin(endpoint string, r *http.Request) (time.Duration, *fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[endpoint]++
	s.logRequest(endpoint, r)
	s.lastHeaders[endpoint] = r.Header.Clone()
	s.lastQueries[endpoint] = r.URL.Query()

	var d time.Duration
	for _, key := range []string{endpoint, ""} {
		if q := s.delays[key]; len(q) > 0 {
			d = q[0].d
			if q[0].n--; q[0].n <= 0 {
				s.delays[key] = q[1:]
			}
			break
		}
	}
	for _, key := range []string{endpoint, ""} {
		if q := s.faults[key]; len(q) > 0 {
			f := q[0]
			if q[0].n--; q[0].n <= 0 {
				s.faults[key] = q[1:]
			}
			if f.status == statusPass {
				return d, nil
			}
			return d, &f
		}
	}
	return d, nil
}

// wait sleeps d, returning false if the request was cancelled (nothing is
// written: the client is gone) or the simulator closed (503 is written).
func (s *Simulator) wait(w http.ResponseWriter, r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-s.done:
		writeError(w, http.StatusServiceUnavailable, "simulator shutting down")
		return false
	}
}

// fail answers an injected failure.
func (s *Simulator) fail(w http.ResponseWriter, endpoint string, status int) {
	switch {
	case status == 0:
		resetConnection(w)
	case status == http.StatusUnauthorized && (endpoint == EndpointAuthToken || endpoint == EndpointBulkAuthToken):
		writeJSON(w, status, map[string]string{"error_code": "401", "error_message": "Invalid client credentials"})
	case status == http.StatusUnauthorized:
		writeError(w, status, msgInvalidToken)
	default:
		writeError(w, status, "simulated failure: "+http.StatusText(status))
	}
}

// resetConnection closes the client connection without a response, with
// an RST where the connection is TCP. Where the connection cannot be
// hijacked (HTTP/2) it answers 503 instead.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusServiceUnavailable, "simulated connection reset (connection not hijackable)")
		return
	}
	c := conn
	for {
		if l, ok := c.(interface{ SetLinger(int) error }); ok {
			_ = l.SetLinger(0)
			break
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	_ = conn.Close()
}

// normalizeStatus maps statuses net/http cannot write to 500.
func normalizeStatus(status int) int {
	if status == 0 || (status >= 200 && status <= 599) {
		return status
	}
	return http.StatusInternalServerError
}

// SetTokenLifetime sets the lifetime of tokens issued from now on; d <= 0
// restores the configured lifetime.
func (s *Simulator) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		d = s.defaultLifetime
	}
	s.lifetime = d
}

// SetOneLiveToken switches the one-live-token-per-client knob (see
// Options.OneLiveToken). Switching it on revokes at once every token but
// each client's last.
func (s *Simulator) SetOneLiveToken(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oneLive = on
}

// SetUploadResponseShape switches the multiupload response shape
// (UploadResponseArray or UploadResponseObject; anything else means the
// array).
func (s *Simulator) SetUploadResponseShape(shape string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uploadShape = normalizeUploadShape(shape)
}

// SetDocumentTypeForm switches the form of file_data.document_type
// (DocumentTypeString or DocumentTypeObject; anything else means the
// string).
func (s *Simulator) SetDocumentTypeForm(form string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docTypeForm = normalizeDocTypeForm(form)
}

// SetProcessingDelay sets the processing delay of documents uploaded from
// now on (see Options.ProcessingDelay): lo when hi <= lo, else a
// per-document value in [lo, hi]. Documents already uploaded keep
// theirs. SetProcessingDelay(0, 0) processes documents at once.
func (s *Simulator) SetProcessingDelay(lo, hi time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procMin, s.procMax = normalizeProcessingDelay(lo, hi)
}

// SetPendingDocuments switches how extracts shows documents still
// processing (PendingListed, PendingEmpty or PendingOmitted; anything
// else means PendingListed).
func (s *Simulator) SetPendingDocuments(form string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = normalizePending(form)
}

// ProcessingDelayFor returns the processing delay a document with
// documentID uploaded now would get. Within a range it is the same for
// the same id in every process: min + sha256("delay:"+id) mod (max-min),
// to the nanosecond.
func (s *Simulator) ProcessingDelayFor(documentID string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return processingDelay(s.procMin, s.procMax, documentID)
}

// RevokeAll invalidates every token issued so far: they answer 401
// Invalid or expired token. Tokens issued afterwards are valid.
func (s *Simulator) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation++
}

// FailAuth makes the next n authtoken calls answer status; status 0 resets
// the connection. It is FailNext(EndpointAuthToken, n, status).
func (s *Simulator) FailAuth(n int, status int) {
	s.FailNext(EndpointAuthToken, n, status)
}

// FailNext makes the next n calls to endpoint (EndpointAuthToken,
// EndpointMultiUpload, EndpointExtracts, a bulk twin, or "" for any) answer status
// instead of being served. status 0 resets the connection without a
// response; a status net/http cannot write means 500. Bodies:
// 401 on authtoken uses {"error_code": "401", "error_message": ...},
// 401 elsewhere {"error": "Invalid or expired token"}, anything else
// {"error": "simulated failure: <status text>"}.
//
// Successive calls queue up: FailNext("extracts", 1, 500) then
// FailNext("extracts", 1, 503) fails the next call with 500 and the one
// after with 503. A call is failed by its endpoint's queue first, then by
// the "" queue. n <= 0 clears the queue of endpoint. Failed calls still
// count in Calls.
func (s *Simulator) FailNext(endpoint string, n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.faults, endpoint)
		return
	}
	s.faults[endpoint] = append(s.faults[endpoint], fault{n: n, status: normalizeStatus(status)})
}

// statusPass marks a queued fault entry that lets calls through unharmed;
// FailAfter uses it to fail calls further down the line.
const statusPass = -1

// FailAfter lets the next skip calls to endpoint ("" for any) through,
// then fails the n after them with status, as FailNext does. It joins the
// same queue as FailNext.
func (s *Simulator) FailAfter(endpoint string, skip, n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if skip > 0 {
		s.faults[endpoint] = append(s.faults[endpoint], fault{n: skip, status: statusPass})
	}
	if n > 0 {
		s.faults[endpoint] = append(s.faults[endpoint], fault{n: n, status: normalizeStatus(status)})
	}
}

// DelayNext makes the next n calls to endpoint ("" for any) wait d before
// being answered (or failed, if a fault applies too). A request whose
// context ends during the wait is abandoned without a response. Queues and
// n <= 0 work as in FailNext.
func (s *Simulator) DelayNext(endpoint string, n int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 || d <= 0 {
		delete(s.delays, endpoint)
		return
	}
	s.delays[endpoint] = append(s.delays[endpoint], delay{n: n, d: d})
}

// Calls returns how many requests reached endpoint since the last reset,
// including failed, delayed and rejected ones. Calls("") is the total over
// every endpoint, the bulk service's included.
func (s *Simulator) Calls(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if endpoint == "" {
		n := 0
		for _, e := range allEndpoints {
			n += s.calls[e]
		}
		return n
	}
	return s.calls[endpoint]
}

// ResetCounters zeroes the call counters.
func (s *Simulator) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
}

// Reset zeroes the call counters, forgets the request log and recorded headers, pending
// faults and delays and recorded deliveries, forgets the automatic
// callbacks (those scheduled and not yet sent too: they never will be,
// and sequence numbers start again at 1), and restores the configured
// token lifetime, one-live-token knob, processing delay, form of pending
// documents, automatic callbacks and rate limits. Batches (with their documents'
// processing times) and tokens survive.
func (s *Simulator) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
	clear(s.lastHeaders)
	clear(s.lastQueries)
	clear(s.faults)
	clear(s.delays)
	s.deliveries = nil
	s.lifetime = s.defaultLifetime
	s.oneLive = s.defaultOneLive
	s.procMin, s.procMax = s.defaultProcMin, s.defaultProcMax
	s.pending = s.defaultPending
	s.resetCallbacks()
	s.rateLimits = maps.Clone(s.defaultRateLimits)
	clear(s.admitted)
	clear(s.requests)
}

// IssuedTokens returns the access tokens issued so far, oldest first (the
// last 1000), so that a test can look for them where they must not appear,
// such as logs. Reset does not forget them.
func (s *Simulator) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// LastHeaders returns a copy of the headers of the last request to
// endpoint, or nil if there was none.
func (s *Simulator) LastHeaders(endpoint string) http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeaders[endpoint].Clone()
}

// LastQuery returns a copy of the query of the last request to endpoint,
// or nil if there was none.
func (s *Simulator) LastQuery(endpoint string) url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.lastQueries[endpoint]
	if q == nil {
		return nil
	}
	out := make(url.Values, len(q))
	for k, v := range q {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// ThrottleNext makes the next n calls to endpoint ("" for any) answer
// 429 {"error": "simulated failure: Too Many Requests"} with Retry-After
// set to retryAfter in whole seconds (at least 1). It is FailNext with a
// Retry-After, in the same queue.
func (s *Simulator) ThrottleNext(endpoint string, n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.faults, endpoint)
		return
	}
	s.faults[endpoint] = append(s.faults[endpoint], fault{n: n, status: http.StatusTooManyRequests, retryAfter: max(retryAfter, time.Second)})
}

// close aborts pending delays (they answer 503) and automatic callbacks.
func (s *Simulator) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.cancel()
	})
	s.loops.Wait()
}

// writeJSON writes v as a JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
