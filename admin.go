package caddyatlas

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/queues"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// Bounds of the admin API's listings.
const (
	adminDefaultLimit = 100
	adminMaxLimit     = 10000
)

// AdminAPI is the `admin.api.atlas` module: endpoints of Caddy's admin
// API to see and act on the spooled callbacks of the callback routes in
// durable mode. Caddy loads it with the admin endpoint; it needs no
// config.
//
//	GET    /atlas/callbacks?state=pending|dead|delivered&limit=N
//	       lists callbacks, oldest first (every state without state;
//	       limit default 100, at most 10000), and each spool's counts
//	GET    /atlas/callbacks/{id}[?body=1]
//	       one callback; body=1 adds its body (pending or dead ones
//	       only), masked by the route's `mask` rules; each use is logged
//	POST   /atlas/callbacks/{id}/retry
//	       makes a pending or dead callback due now, attempts reset
//	POST   /atlas/callbacks/retry?state=dead|pending
//	       does that for every callback in the state
//	DELETE /atlas/callbacks/{id}
//	       forgets a callback, whatever its state
//
// Every item names its spool directory. With several spools open, the
// listing and the bulk retry cover all of them unless `spool=<dir>` names
// one; an action on an id finds the spool holding it, and needs
// `spool=<dir>` only if several do. Bodies are never listed.
type AdminAPI struct {
	logger *zap.Logger
}

// Provision takes the module's logger, which records each ?body=1.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	return nil
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.atlas",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes of the module.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/atlas/callbacks", Handler: caddy.AdminHandlerFunc(a.serveList)},
		{Pattern: "/atlas/callbacks/", Handler: caddy.AdminHandlerFunc(a.serveItem)},
		{Pattern: "/atlas/batches", Handler: caddy.AdminHandlerFunc(a.serveBatches)},
		{Pattern: "/atlas/batches/", Handler: caddy.AdminHandlerFunc(a.serveBatches)},
	}
}

// serveBatches serves GET /atlas/batches[?state=...&limit=N&cursor=...]
// and GET /atlas/batches/{batch_id}: what the batches_path of a site
// answers, from the open ledger of batches.
func (a *AdminAPI) serveBatches(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return adminMethodNotAllowed(w, http.MethodGet)
	}
	store := openLedger()
	if store == nil {
		return adminError(http.StatusNotFound, errors.New("no ledger of batches is open: add batches { ... } to the global atlas options"))
	}
	pollAfter := store.Policy().PollAfter
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/atlas/batches"), "/")
	if id == "" {
		return serveBatchPage(w, r, store, pollAfter)
	}
	b, err := store.Get(r.Context(), id)
	if errors.Is(err, ledger.ErrNotFound) {
		return adminError(http.StatusNotFound, fmt.Errorf("no such batch: %s", id))
	}
	if err != nil {
		return adminError(http.StatusInternalServerError, err)
	}
	return writeJSON(w, http.StatusOK, answerOf(b, time.Now(), pollAfter))
}

// adminCallback is a callback as the admin API shows it.
type adminCallback struct {
	Spool string `json:"spool"`
	queue.Info
	// Body is the callback body, as JSON, with ?body=1.
	Body json.RawMessage `json:"body,omitempty"`
	// BodyBase64 is the body, base64-encoded, if it is not valid JSON
	// (and the route masks nothing).
	BodyBase64 string `json:"body_base64,omitempty"`
	// BodyWithheld says why a body is not shown: it is not JSON and the
	// route masks fields.
	BodyWithheld string `json:"body_withheld,omitempty"`
}

// adminSpool is a spool's summary in a listing.
type adminSpool struct {
	Dir string `json:"dir"`
	queue.Stats
}

// adminList is the answer to GET /atlas/callbacks.
type adminList struct {
	Spools    []adminSpool    `json:"spools"`
	Callbacks []adminCallback `json:"callbacks"`
	// Truncated is true if there are more callbacks than limit.
	Truncated bool `json:"truncated,omitempty"`
}

// serveList serves /atlas/callbacks: GET lists.
func (a *AdminAPI) serveList(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return adminMethodNotAllowed(w, http.MethodGet)
	}
	q := r.URL.Query()
	state, err := queue.ParseState(q.Get("state"))
	if err != nil {
		return adminError(http.StatusBadRequest, errors.New("state must be pending, dead or delivered"))
	}
	limit := adminDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > adminMaxLimit {
			return adminError(http.StatusBadRequest, fmt.Errorf("limit must be a number from 1 to %d", adminMaxLimit))
		}
		limit = n
	}
	selected, err := selectSpools(q.Get("spool"))
	if err != nil {
		return err
	}
	out := adminList{Spools: []adminSpool{}, Callbacks: []adminCallback{}}
	for _, s := range selected {
		out.Spools = append(out.Spools, adminSpool{Dir: s.Name, Stats: s.Store.Stats()})
		// One more than the limit tells whether the listing is truncated.
		for _, info := range s.Store.List(state, limit+1) {
			out.Callbacks = append(out.Callbacks, adminCallback{Spool: s.Name, Info: info})
		}
	}
	slices.SortStableFunc(out.Callbacks, func(x, y adminCallback) int { return x.Received.Compare(y.Received) })
	if len(out.Callbacks) > limit {
		out.Callbacks, out.Truncated = out.Callbacks[:limit], true
	}
	return adminJSON(w, http.StatusOK, out)
}

// serveItem serves /atlas/callbacks/{id}, /atlas/callbacks/{id}/retry and
// /atlas/callbacks/retry.
func (a *AdminAPI) serveItem(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/atlas/callbacks/")
	q := r.URL.Query()
	if rest == "retry" {
		if r.Method != http.MethodPost {
			return adminMethodNotAllowed(w, http.MethodPost)
		}
		return a.retryAll(w, r, q.Get("state"), q.Get("spool"))
	}
	id, action, _ := strings.Cut(rest, "/")
	if id == "" || strings.Contains(action, "/") || (action != "" && action != "retry") {
		return adminError(http.StatusNotFound, fmt.Errorf("no such endpoint: %s", r.URL.Path))
	}
	if action == "retry" {
		if r.Method != http.MethodPost {
			return adminMethodNotAllowed(w, http.MethodPost)
		}
		s, _, err := findCallback(id, q.Get("spool"))
		if err != nil {
			return err
		}
		if err := s.Store.Retry(r.Context(), id); err != nil {
			return storeError(id, err)
		}
		return adminJSON(w, http.StatusOK, map[string]int{"retried": 1})
	}
	switch r.Method {
	case http.MethodGet:
		s, info, err := findCallback(id, q.Get("spool"))
		if err != nil {
			return err
		}
		item := adminCallback{Spool: s.Name, Info: info}
		if b := q.Get("body"); b == "1" || b == "true" {
			if err := a.loadBody(r, s, id, &item); err != nil {
				return err
			}
		}
		return adminJSON(w, http.StatusOK, item)
	case http.MethodDelete:
		s, _, err := findCallback(id, q.Get("spool"))
		if err != nil {
			return err
		}
		if err := s.Store.Delete(r.Context(), id); err != nil {
			return storeError(id, err)
		}
		return adminJSON(w, http.StatusOK, map[string]int{"deleted": 1})
	}
	return adminMethodNotAllowed(w, "GET, DELETE")
}

// loadBody adds a callback's body to item, masked with the route's mask
// rules (a body stored before they were set is masked now). Each use is
// logged: who asked (the remote address), which callback, never the
// body.
func (a *AdminAPI) loadBody(r *http.Request, s *queues.OpenQueue, id string, item *adminCallback) error {
	e, err := s.Store.Load(r.Context(), id)
	if err != nil {
		return storeError(id, err)
	}
	if a.logger != nil {
		a.logger.Info("callback body inspected",
			zap.String("remote_addr", r.RemoteAddr),
			zap.String("callback_id", id),
			zap.String("spool", s.Name),
			zap.Bool("masked", s.Masker != nil))
	}
	switch {
	case s.Masker != nil:
		masked, _, err := s.Masker.Payload(nil, e.Body)
		if err != nil {
			// Nothing of a body that cannot be masked is shown.
			item.BodyWithheld = "the body is not JSON, so it cannot be masked"
			return nil
		}
		item.Body = masked
	case json.Valid(e.Body):
		item.Body = e.Body
	default:
		item.BodyBase64 = base64.StdEncoding.EncodeToString(e.Body)
	}
	return nil
}

// retryAll serves POST /atlas/callbacks/retry?state=dead|pending.
func (a *AdminAPI) retryAll(w http.ResponseWriter, r *http.Request, stateName, dir string) error {
	if stateName == "" {
		stateName = "dead"
	}
	state, err := queue.ParseState(stateName)
	if err != nil || (state != queue.StateDead && state != queue.StatePending) {
		return adminError(http.StatusBadRequest, errors.New("state must be dead or pending"))
	}
	selected, err := selectSpools(dir)
	if err != nil {
		return err
	}
	var total int
	for _, s := range selected {
		n, err := s.Store.RetryAll(r.Context(), state)
		total += n
		if err != nil {
			return adminError(http.StatusInternalServerError, fmt.Errorf("retrying in spool %s after %d callbacks: %w", s.Name, total, err))
		}
	}
	return adminJSON(w, http.StatusOK, map[string]int{"retried": total})
}

// selectSpools returns the open spool in dir, or every open spool when
// dir is empty.
func selectSpools(dir string) ([]queues.OpenQueue, error) {
	all := queues.Open()
	if dir == "" {
		return all, nil
	}
	key, err := queues.SpoolKey(dir)
	if err != nil {
		key = dir
	}
	for _, s := range all {
		if s.Name == key || s.Name == dir {
			return []queues.OpenQueue{s}, nil
		}
	}
	return nil, adminError(http.StatusNotFound, fmt.Errorf("no open spool in %s", dir))
}

// findCallback returns the spool holding the callback id and its state.
func findCallback(id, dir string) (*queues.OpenQueue, queue.Info, error) {
	selected, err := selectSpools(dir)
	if err != nil {
		return nil, queue.Info{}, err
	}
	var found *queues.OpenQueue
	var info queue.Info
	for _, s := range selected {
		if i, ok := s.Store.Get(id); ok {
			if found != nil {
				return nil, info, adminError(http.StatusConflict,
					fmt.Errorf("callback %s is in several spools (%s, %s): name one with ?spool=", id, found.Name, s.Name))
			}
			found, info = &s, i
		}
	}
	if found == nil {
		return nil, info, adminError(http.StatusNotFound, fmt.Errorf("no callback %s", id))
	}
	return found, info, nil
}

// storeError maps an error of the store to an admin API error.
func storeError(id string, err error) error {
	switch {
	case errors.Is(err, queue.ErrNotFound):
		return adminError(http.StatusNotFound, fmt.Errorf("no callback %s", id))
	case errors.Is(err, queue.ErrDelivered):
		return adminError(http.StatusConflict, fmt.Errorf("callback %s is already delivered; its body is not kept", id))
	case errors.Is(err, queue.ErrClosed), errors.Is(err, queue.ErrUnavailable):
		return adminError(http.StatusServiceUnavailable, err)
	case errors.Is(err, seal.ErrUnknownKey):
		// Not the server's fault: the record is whole, and opens once
		// the key that sealed it is among the route's keys again.
		return adminError(http.StatusConflict, fmt.Errorf("callback %s is sealed under a key the route no longer has; add it back as an encryption_key to read the body: %w", id, err))
	}
	return adminError(http.StatusInternalServerError, err)
}

// adminError is an error answer of the admin API.
func adminError(status int, err error) error {
	return caddy.APIError{HTTPStatus: status, Err: err}
}

// adminMethodNotAllowed answers a method the endpoint does not serve.
func adminMethodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return adminError(http.StatusMethodNotAllowed, fmt.Errorf("method not allowed; use %s", allow))
}

// adminJSON writes v as the JSON answer.
func adminJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return adminError(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
	return nil
}

// Interface guards
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
