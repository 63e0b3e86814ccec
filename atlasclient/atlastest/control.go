package atlastest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// ControlPrefix is the path prefix of the unauthenticated control
// endpoints. See the package documentation.
const ControlPrefix = "/_sim/"

// callbackRequest is the body of POST /_sim/callback.
type callbackRequest struct {
	AuthURL      string `json:"auth_url"`
	CallbackURL  string `json:"callback_url"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	BatchID      string `json:"batch_id"`
}

// serveControl answers the /_sim/ control endpoints.
func (s *Simulator) serveControl(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Path[len(ControlPrefix):]
	method := http.MethodPost
	if name == "counters" || name == "deliveries" || name == "callbacks" || name == "requests" {
		method = http.MethodGet
	}
	switch name {
	case "revoke", "fail", "delay", "counters", "reset", "token-lifetime", "one-live-token", "callback", "deliveries",
		"processing-delay", "pending-documents", "auto-callback", "callbacks",
		"throttle", "rate-limit", "requests":
	default:
		writeError(w, http.StatusNotFound, "unknown control endpoint")
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}

	q := r.URL.Query()
	switch name {
	case "revoke":
		s.RevokeAll()
		writeOK(w)
	case "reset":
		s.Reset()
		writeOK(w)
	case "counters":
		endpoints := []string{EndpointAuthToken, EndpointMultiUpload, EndpointExtracts}
		switch q.Get("service") {
		case "", serviceDocstream:
		case serviceBulk:
			endpoints = []string{EndpointBulkAuthToken, EndpointBulkMultiUpload, EndpointBulkExtracts}
		default:
			writeError(w, http.StatusBadRequest, "service must be docstream or bulk")
			return
		}
		counts := map[string]int{}
		for _, e := range endpoints {
			counts[e] = s.Calls(e)
		}
		writeJSON(w, http.StatusOK, counts)
	case "deliveries":
		d := s.Deliveries()
		if d == nil {
			d = []Delivery{}
		}
		writeJSON(w, http.StatusOK, d)
	case "token-lifetime":
		secs, err := strconv.Atoi(q.Get("seconds"))
		if err != nil || secs < 1 {
			writeError(w, http.StatusBadRequest, "seconds must be a positive integer")
			return
		}
		s.SetTokenLifetime(time.Duration(secs) * time.Second)
		writeOK(w)
	case "one-live-token":
		on, err := strconv.ParseBool(q.Get("enabled"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "enabled must be true or false")
			return
		}
		s.SetOneLiveToken(on)
		writeOK(w)
	case "processing-delay":
		lo, err := strconv.Atoi(q.Get("ms"))
		if err != nil || lo < 0 {
			writeError(w, http.StatusBadRequest, "ms must be a non-negative integer")
			return
		}
		hi := lo
		if v := q.Get("max_ms"); v != "" {
			hi, err = strconv.Atoi(v)
			if err != nil || hi < lo {
				writeError(w, http.StatusBadRequest, "max_ms must be an integer not below ms")
				return
			}
		}
		s.SetProcessingDelay(time.Duration(lo)*time.Millisecond, time.Duration(hi)*time.Millisecond)
		writeOK(w)
	case "pending-documents":
		switch form := q.Get("form"); form {
		case PendingListed, PendingEmpty, PendingOmitted:
			s.SetPendingDocuments(form)
			writeOK(w)
		default:
			writeError(w, http.StatusBadRequest, "form must be listed, empty or omitted")
		}
	case "fail":
		endpoint, n, ok := endpointAndCount(w, q.Get("endpoint"), q.Get("n"))
		if !ok {
			return
		}
		status, err := strconv.Atoi(q.Get("status"))
		if err != nil || (status != 0 && (status < 200 || status > 599)) {
			writeError(w, http.StatusBadRequest, "status must be 0 (connection reset) or an HTTP status in 200-599")
			return
		}
		s.FailNext(endpoint, n, status)
		writeOK(w)
	case "delay":
		endpoint, n, ok := endpointAndCount(w, q.Get("endpoint"), q.Get("n"))
		if !ok {
			return
		}
		ms, err := strconv.Atoi(q.Get("ms"))
		if err != nil || ms < 0 {
			writeError(w, http.StatusBadRequest, "ms must be a non-negative integer")
			return
		}
		s.DelayNext(endpoint, n, time.Duration(ms)*time.Millisecond)
		writeOK(w)
	case "throttle":
		endpoint, n, ok := endpointAndCount(w, q.Get("endpoint"), q.Get("n"))
		if !ok {
			return
		}
		secs := 1
		if v := q.Get("retry_after"); v != "" {
			var err error
			if secs, err = strconv.Atoi(v); err != nil || secs < 1 {
				writeError(w, http.StatusBadRequest, "retry_after must be a positive number of seconds")
				return
			}
		}
		s.ThrottleNext(endpoint, n, time.Duration(secs)*time.Second)
		writeOK(w)
	case "rate-limit":
		endpoint, _, ok := endpointAndCount(w, q.Get("endpoint"), "0")
		if !ok {
			return
		}
		n, err := strconv.Atoi(q.Get("per_second"))
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "per_second must be a non-negative integer (0 lifts the limit)")
			return
		}
		s.SetRateLimit(endpoint, n)
		writeOK(w)
	case "requests":
		endpoint, _, ok := endpointAndCount(w, q.Get("endpoint"), "0")
		if !ok {
			return
		}
		window := time.Second
		if v := q.Get("window_ms"); v != "" {
			ms, err := strconv.Atoi(v)
			if err != nil || ms < 1 {
				writeError(w, http.StatusBadRequest, "window_ms must be a positive integer")
				return
			}
			window = time.Duration(ms) * time.Millisecond
		}
		client := q.Get("client")
		reqs := []RequestRecord{}
		for _, r := range s.Requests(endpoint) {
			if client == "" || r.Client == client {
				reqs = append(reqs, r)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"requests":  reqs,
			"peak":      s.PeakRate(endpoint, client, window),
			"window_ms": window.Milliseconds(),
		})
	case "callback":
		s.serveControlCallback(w, r)
	case "auto-callback":
		s.serveControlAutoCallback(w, r)
	case "callbacks":
		ev := s.Callbacks()
		writeJSON(w, http.StatusOK, map[string]any{"counts": s.CallbackCounts(), "callbacks": ev})
	}
}

// endpointAndCount parses the endpoint and n parameters of fail and delay,
// answering 400 when they are bad.
func endpointAndCount(w http.ResponseWriter, endpoint, count string) (string, int, bool) {
	if endpoint != "" && !KnownEndpoint(endpoint) {
		writeError(w, http.StatusBadRequest, "endpoint must be authtoken, multiupload, extracts, bulk/authtoken, bulk/multiupload, bulk/extracts or empty")
		return "", 0, false
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		writeError(w, http.StatusBadRequest, "n must be a non-negative integer")
		return "", 0, false
	}
	return endpoint, n, true
}

// serveControlCallback answers POST /_sim/callback.
func (s *Simulator) serveControlCallback(w http.ResponseWriter, r *http.Request) {
	var req callbackRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if req.BatchID == "" || req.CallbackURL == "" {
		writeError(w, http.StatusBadRequest, "batch_id and callback_url are required")
		return
	}
	if _, ok := s.batch(req.BatchID); !ok {
		writeError(w, http.StatusNotFound, "batch not found")
		return
	}
	d, err := s.DeliverCallback(r.Context(), CallbackTarget{
		AuthURL:      req.AuthURL,
		CallbackURL:  req.CallbackURL,
		ClientID:     req.ClientID,
		ClientSecret: req.ClientSecret,
	}, req.BatchID)
	status := http.StatusOK
	if err != nil {
		status = http.StatusBadGateway
		if errors.Is(err, ErrUnknownBatch) {
			status = http.StatusNotFound
		}
	}
	writeJSON(w, status, d)
}

func writeOK(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// autoCallbackRequest is the body of POST /_sim/auto-callback.
type autoCallbackRequest struct {
	AuthURL      string  `json:"auth_url"`
	CallbackURL  string  `json:"callback_url"`
	ClientID     string  `json:"client_id"`
	ClientSecret string  `json:"client_secret"`
	Per          string  `json:"per"`
	DelayMS      int64   `json:"delay_ms"`
	Drop         float64 `json:"drop"`
	DropNth      []int   `json:"drop_nth"`
	Repeat       float64 `json:"repeat"`
	RepeatNth    []int   `json:"repeat_nth"`
	Seed         uint64  `json:"seed"`
}

// Callback granularities, as /_sim/auto-callback's per and the Caddy
// module name them.
const (
	CallbackPerBatch    = "batch"
	CallbackPerDocument = "document"
)

// AutoCallbackProblem reports what is wrong with a, or "" if nothing is.
// A nil a, or one without Target.CallbackURL, is fine: it means off.
func AutoCallbackProblem(a *AutoCallback) string {
	if a == nil || a.Target.CallbackURL == "" {
		return ""
	}
	if err := checkURL("callback_url", a.Target.CallbackURL); err != nil {
		return err.Error()
	}
	if a.Target.AuthURL != "" {
		if err := checkURL("auth_url", a.Target.AuthURL); err != nil {
			return err.Error()
		}
	}
	if a.Delay < 0 {
		return "delay must not be negative"
	}
	if !(a.Drop >= 0 && a.Drop <= 1) || !(a.Repeat >= 0 && a.Repeat <= 1) {
		return "drop and repeat must be fractions in [0, 1]"
	}
	for _, n := range append(slices.Clone(a.DropNth), a.RepeatNth...) {
		if n < 1 {
			return "drop_nth and repeat_nth must be sequence numbers from 1"
		}
	}
	return ""
}

// serveControlAutoCallback answers POST /_sim/auto-callback.
func (s *Simulator) serveControlAutoCallback(w http.ResponseWriter, r *http.Request) {
	var req autoCallbackRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if req.Per != "" && req.Per != CallbackPerBatch && req.Per != CallbackPerDocument {
		writeError(w, http.StatusBadRequest, "per must be batch or document")
		return
	}
	a := &AutoCallback{
		Target: CallbackTarget{
			AuthURL:      req.AuthURL,
			CallbackURL:  req.CallbackURL,
			ClientID:     req.ClientID,
			ClientSecret: req.ClientSecret,
		},
		PerDocument: req.Per == CallbackPerDocument,
		Delay:       time.Duration(req.DelayMS) * time.Millisecond,
		Drop:        req.Drop,
		DropNth:     req.DropNth,
		Repeat:      req.Repeat,
		RepeatNth:   req.RepeatNth,
		Seed:        req.Seed,
	}
	if msg := AutoCallbackProblem(a); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	s.SetAutoCallback(a)
	writeOK(w)
}
