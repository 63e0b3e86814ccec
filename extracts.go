package caddyatlas

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
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/mask"
)

// MaxPerPage is the largest page Atlas serves; a larger per_page is capped.
const MaxPerPage = 50

// maxAllPages bounds the pages fetched for one `all=1` request, so an
// upstream that never says it is done cannot keep a request open forever.
const maxAllPages = 100_000

// serveExtracts proxies GET {extracts_path} to Atlas's extracts endpoint.
func (h *Handler) serveExtracts(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(w, http.MethodGet)
	}
	q, err := parseExtractsQuery(r.URL.RawQuery)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	if q.all {
		return h.serveAllExtracts(w, r, q)
	}

	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.Timeout))
	defer cancel()
	resp, err := h.exchange(ctx, r, routeExtracts, h.extractsRequest(ctx, q))
	if err != nil {
		return h.writeExchangeError(ctx, w, r, err)
	}
	defer resp.Body.Close()
	if h.masker != nil && resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return h.relayMaskedPage(ctx, w, r, resp, q)
	}
	return h.relayResponse(w, resp)
}

// maxMaskedPage bounds the extracts page read into memory to be masked.
// A page holds at most MaxPerPage documents, a few KiB each.
const maxMaskedPage = 16 << 20

// maskPageBufs pools the buffers of masked pages (the page as read, and
// as masked); buffers grown past maxPooledPage are let go.
var maskPageBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledPage = 1 << 20

func putMaskPageBuf(b *bytes.Buffer) {
	if b.Cap() <= maxPooledPage {
		b.Reset()
		maskPageBufs.Put(b)
	}
}

// relayMaskedPage answers an extracts page with its `mask` fields masked.
// The page is read whole (at most maxMaskedPage), masked, then written;
// a page that is not JSON, or too large, is a 502 and nothing of it is
// passed on.
func (h *Handler) relayMaskedPage(ctx context.Context, w http.ResponseWriter, r *http.Request, resp *http.Response, q extractsQuery) error {
	in := maskPageBufs.Get().(*bytes.Buffer)
	defer putMaskPageBuf(in)
	if n := resp.ContentLength; n > 0 && n <= maxMaskedPage {
		in.Grow(int(n) + 1)
	}
	if _, err := in.ReadFrom(io.LimitReader(resp.Body, maxMaskedPage+1)); err != nil {
		return h.writeExchangeError(ctx, w, r, err)
	}
	if in.Len() > maxMaskedPage {
		h.logger.Warn("atlas sent an extracts page too large to mask",
			zap.String("batch_id", q.batchID), zap.Int("limit_bytes", maxMaskedPage))
		return writeError(w, http.StatusBadGateway, "atlas sent an extracts page too large to mask")
	}
	out := maskPageBufs.Get().(*bytes.Buffer)
	defer putMaskPageBuf(out)
	out.Grow(in.Len() + in.Len()/8)
	masked, _, err := h.masker.Payload(out.AvailableBuffer(), in.Bytes())
	if err != nil {
		h.logger.Warn("atlas sent an unreadable extracts page",
			zap.String("batch_id", q.batchID), zap.Error(err))
		return writeError(w, http.StatusBadGateway, "atlas sent an unreadable extracts page")
	}
	hdr := w.Header()
	for _, name := range relayedHeaders {
		if v := resp.Header.Values(name); len(v) > 0 && name != "Content-Length" {
			hdr[name] = v
		}
	}
	hdr.Set("Content-Length", strconv.Itoa(len(masked)))
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(masked)
	return nil
}

// extractsQuery is the validated query of an extracts request.
type extractsQuery struct {
	batchID string
	page    int // 0: not given
	perPage int // 0: not given; else capped at MaxPerPage
	all     bool
}

// parseExtractsQuery validates the client's query. Only batch_id, page,
// per_page and all are read; anything else is ignored and never forwarded.
func parseExtractsQuery(rawQuery string) (extractsQuery, error) {
	var q extractsQuery
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return q, errors.New("the query string is malformed")
	}
	single := func(name string) (string, error) {
		v := values[name]
		if len(v) > 1 {
			return "", fmt.Errorf("%s is given more than once", name)
		}
		if len(v) == 0 {
			return "", nil
		}
		return strings.TrimSpace(v[0]), nil
	}
	if q.batchID, err = single("batch_id"); err != nil {
		return q, err
	}
	if q.batchID == "" {
		// Atlas's own message for the same mistake.
		return q, errors.New("batch_id is required")
	}
	for _, p := range []struct {
		name string
		dst  *int
	}{{"page", &q.page}, {"per_page", &q.perPage}} {
		v, err := single(p.name)
		if err != nil {
			return q, err
		}
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return q, fmt.Errorf("%s must be a positive integer", p.name)
		}
		*p.dst = n
	}
	q.perPage = min(q.perPage, MaxPerPage)

	all, err := single("all")
	if err != nil {
		return q, err
	}
	switch strings.ToLower(all) {
	case "", "0", "false":
	case "1", "true":
		q.all = true
		if q.page != 0 {
			return q, errors.New("page cannot be combined with all=1")
		}
	default:
		return q, errors.New("all must be 1 or 0")
	}
	return q, nil
}

// extractsRequest builds the upstream request for one page. The URL is
// built as a struct, not a string to parse again; its query is what
// url.Values.Encode would give (keys sorted, values escaped).
func (h *Handler) extractsRequest(ctx context.Context, q extractsQuery) *http.Request {
	u := h.apiURL(h.service.extracts)
	var b strings.Builder
	b.Grow(len("batch_id=&page=&per_page=") + len(q.batchID) + 8)
	b.WriteString("batch_id=")
	b.WriteString(url.QueryEscape(q.batchID))
	if q.page > 0 {
		b.WriteString("&page=")
		b.WriteString(strconv.Itoa(q.page))
	}
	if q.perPage > 0 {
		b.WriteString("&per_page=")
		b.WriteString(strconv.Itoa(q.perPage))
	}
	u.RawQuery = b.String()
	req := (&http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header, 4),
		Host:       u.Host,
	}).WithContext(ctx)
	req.Header["Accept"] = []string{"application/json"}
	return req
}

// apiURL returns the URL of an Atlas endpoint: path (absolute, clean)
// under the configured endpoint.
func (h *Handler) apiURL(path string) *url.URL {
	if h.endpoint.RawPath != "" {
		// An escaped path prefix: let net/url join and escape it.
		u, _ := url.Parse(h.endpoint.JoinPath(path).String())
		return u
	}
	u := *h.endpoint
	u.Path = strings.TrimRight(u.Path, "/") + path
	return &u
}

// serveAllExtracts answers `all=1`: every document of the batch in one
// page envelope, fetched from Atlas page by page. Only one page is held in
// memory at a time. An error on the first page is answered like any other
// extracts error; an error after the response has started aborts it, so a
// client can never take a truncated batch for a complete one.
func (h *Handler) serveAllExtracts(w http.ResponseWriter, r *http.Request, q extractsQuery) error {
	q.perPage = MaxPerPage
	var (
		pageBuf bytes.Buffer
		written int
	)
	for q.page = 1; q.page <= maxAllPages; q.page++ {
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(h.Timeout))
		resp, err := h.exchange(ctx, r, routeExtracts, h.extractsRequest(ctx, q))
		if err != nil {
			defer cancel()
			if q.page == 1 {
				return h.writeExchangeError(ctx, w, r, err)
			}
			h.abortStream(w, q, err)
		}
		if q.page == 1 && resp.StatusCode != http.StatusOK {
			defer cancel()
			defer resp.Body.Close()
			return h.relayResponse(w, resp)
		}
		pageBuf.Reset()
		if q.page == 1 {
			pageBuf.WriteString(`{"data":[`)
		}
		info, err := copyPageDocuments(&pageBuf, resp, written > 0, h.masker)
		resp.Body.Close()
		cancel()
		if err != nil {
			if q.page == 1 {
				h.logger.Warn("atlas sent an unreadable extracts page",
					zap.String("batch_id", q.batchID), zap.Error(err))
				return writeError(w, http.StatusBadGateway, "atlas sent an unreadable extracts page")
			}
			h.abortStream(w, q, err)
		}
		if q.page == 1 {
			hdr := w.Header()
			hdr.Set("Content-Type", "application/json")
			hdr.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
		}
		written += info.documents
		if _, err := w.Write(pageBuf.Bytes()); err != nil {
			// The client went away; there is no one left to answer.
			return nil
		}
		_ = http.NewResponseController(w).Flush()
		if !info.hasNext || info.documents == 0 || (info.totalPages > 0 && q.page >= info.totalPages) {
			break
		}
	}
	_, _ = fmt.Fprintf(w, `],"page":1,"per_page":%d,"total_pages":1,"total_items":%d,"has_next":false,"has_prev":false}`+"\n",
		written, written)
	return nil
}

// pageInfo is what the `all=1` loop needs to know of a page.
type pageInfo struct {
	documents  int
	hasNext    bool
	totalPages int
}

// copyPageDocuments streams the elements of a page's `data` array into
// dst, each as Atlas sent it (masked by m, if not nil), comma-separated
// (with a leading comma when more is true), and reads the pagination
// fields.
func copyPageDocuments(dst *bytes.Buffer, resp *http.Response, more bool, m *mask.Masker) (pageInfo, error) {
	var info pageInfo
	if resp.StatusCode != http.StatusOK {
		return info, fmt.Errorf("atlas answered %d", resp.StatusCode)
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := expectDelim(dec, '{'); err != nil {
		return info, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return info, err
		}
		key, _ := tok.(string)
		switch key {
		case "data":
			if err := expectDelim(dec, '['); err != nil {
				return info, fmt.Errorf("data: %w", err)
			}
			for dec.More() {
				var doc json.RawMessage
				if err := dec.Decode(&doc); err != nil {
					return info, fmt.Errorf("data[%d]: %w", info.documents, err)
				}
				if more || info.documents > 0 {
					dst.WriteByte(',')
				}
				if m != nil {
					masked, _, err := m.Document(dst.AvailableBuffer(), doc)
					if err != nil {
						return info, fmt.Errorf("data[%d]: %w", info.documents, err)
					}
					dst.Write(masked)
				} else {
					dst.Write(doc)
				}
				info.documents++
			}
			if err := expectDelim(dec, ']'); err != nil {
				return info, err
			}
		case "has_next":
			if err := dec.Decode(&info.hasNext); err != nil {
				return info, fmt.Errorf("has_next: %w", err)
			}
		case "total_pages":
			if err := dec.Decode(&info.totalPages); err != nil {
				return info, fmt.Errorf("total_pages: %w", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return info, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	return info, expectDelim(dec, '}')
}

// expectDelim reads the next token and checks it is the delimiter want.
func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("expected %q, got %v", want, tok)
	}
	return nil
}

// abortStream ends an `all=1` response that has already started, the way
// Caddy's reverse_proxy ends a response whose upstream failed mid-body:
// http.ErrAbortHandler makes net/http cut the connection (or reset the
// HTTP/2 stream) without a final chunk, so the client sees an incomplete
// response rather than a short, well-formed one. net/http recovers it
// quietly; it is not a crash.
func (h *Handler) abortStream(w http.ResponseWriter, q extractsQuery, err error) {
	h.logger.Warn("aborting an all=1 extracts response after a failed page",
		zap.String("batch_id", q.batchID), zap.Int("page", q.page), zap.Error(err))
	_ = http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}

// maxBufferedBody bounds the responses relayResponse reads whole before
// answering; larger ones, and those of unknown length, are streamed.
const maxBufferedBody = 1 << 20

// bodyBufs holds relayResponse's buffers. A buffer that grew past
// maxPooledBuf is left to the garbage collector.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}

const maxPooledBuf = 256 << 10

// relayResponse relays Atlas's response to the client: status, the
// headers that describe the body, and the body itself. A body of known
// length up to maxBufferedBody is read whole into a pooled buffer first
// and written in one call, so that the client gets the headers and the
// body in one or two writes rather than one per read from Atlas (a CPU
// profile under load put the write calls at a third of the route's time).
// A body that fails part-way is relayed as far as it came and then cut
// off, so the client sees an incomplete response, never a short one.
func (h *Handler) relayResponse(w http.ResponseWriter, resp *http.Response) error {
	hdr := w.Header()
	for _, name := range relayedHeaders {
		if v := resp.Header[name]; len(v) > 0 {
			hdr[name] = v
		}
	}
	hdr.Set("Cache-Control", "no-store")

	bp := bodyBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBuf {
			bodyBufs.Put(bp)
		}
	}()
	if n := resp.ContentLength; n >= 0 && n <= maxBufferedBody {
		buf, err := readBody(resp.Body, (*bp)[:0], int(n))
		*bp = buf[:0]
		w.WriteHeader(resp.StatusCode)
		if len(buf) > 0 {
			if _, werr := w.Write(buf); werr != nil && err == nil {
				err = werr
			}
		}
		if err != nil {
			h.abortRelay(w, err)
		}
		return nil
	}
	w.WriteHeader(resp.StatusCode)
	// writerOnly keeps io.CopyBuffer off the writer's ReadFrom, which
	// would copy through a buffer of its own, and our buffer is pooled.
	if _, err := io.CopyBuffer(writerOnly{w}, resp.Body, (*bp)[:cap(*bp)]); err != nil {
		h.abortRelay(w, err)
	}
	return nil
}

// readBody reads body to its end into buf, which it grows to hold n
// bytes (the announced length) and returns. It reads on until io.EOF, so
// that the transport sees the body end and keeps the connection; more
// than n bytes is an error.
func readBody(body io.Reader, buf []byte, n int) ([]byte, error) {
	if cap(buf) < n+1 {
		buf = make([]byte, 0, n+1)
	}
	for {
		m, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		switch {
		case err == io.EOF:
			if len(buf) != n {
				return buf, io.ErrUnexpectedEOF
			}
			return buf, nil
		case err != nil:
			return buf, err
		case len(buf) > n:
			return buf[:n], errors.New("atlas sent more than its Content-Length")
		}
	}
}

// abortRelay cuts off a response whose body could not be relayed whole.
func (h *Handler) abortRelay(w http.ResponseWriter, err error) {
	if c := h.logger.Check(zapcore.DebugLevel, "relaying atlas's response failed"); c != nil {
		c.Write(zap.Error(err))
	}
	_ = http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}

// writerOnly hides any ReadFrom method of its writer.
type writerOnly struct{ io.Writer }

// relayedHeaders are the response headers of Atlas's that reach the
// client. Everything else (cookies, hop-by-hop headers) stays behind.
var relayedHeaders = []string{"Content-Type", "Content-Length", "Retry-After", "X-Request-Id"}
