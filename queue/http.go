package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Headers set by HTTPDeliverer.
const (
	// HeaderAttempt carries the attempt number, from 1.
	HeaderAttempt = "X-Atlas-Attempt"
	// HeaderCallbackID carries the callback id, the receiver's
	// deduplication key; set from Delivery.ID if the stored headers lack
	// it.
	HeaderCallbackID = "X-Atlas-Callback-Id"
)

// hopHeaders are not forwarded from the stored headers: they describe a
// connection, not the callback.
var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "Content-Length", "Host",
}

// HTTPDeliverer delivers callbacks by POSTing them to URL: the body as
// stored, the stored headers (hop-by-hop ones dropped), and
// X-Atlas-Attempt. Content-Type defaults
// to application/json. A 2xx answer means delivered; anything else,
// redirects included (they are not followed), is a *StatusError.
type HTTPDeliverer struct {
	// URL is where callbacks are POSTed.
	URL string
	// Client sends the requests; nil means a zero http.Client.
	// Redirects are never followed, whatever its CheckRedirect. Bound
	// each attempt with the context (Options.DeliveryTimeout), not
	// Client.Timeout.
	Client *http.Client
	// Header, if set, is called for each attempt, after the request's
	// headers are set and before it is sent, to add or replace headers
	// that belong to the attempt rather than to the stored callback: a
	// signature over the body with the attempt's timestamp (Standard
	// Webhooks' webhook-timestamp must be fresh on every retry).
	Header func(h http.Header, d Delivery)
}

// StatusError is a delivery answered with a non-2xx status.
type StatusError struct {
	// Code is the HTTP status code of the answer.
	Code int
}

// Error returns e.g. "receiver answered 503 Service Unavailable".
func (e *StatusError) Error() string {
	return fmt.Sprintf("receiver answered %d %s", e.Code, http.StatusText(e.Code))
}

// Deliver implements DeliverFunc (use h.Deliver as Options.Deliver).
func (h *HTTPDeliverer) Deliver(ctx context.Context, d Delivery) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(d.Body))
	if err != nil {
		return err
	}
	for k, vs := range d.Header {
		req.Header[k] = slices.Clone(vs)
	}
	for _, k := range hopHeaders {
		req.Header.Del(k)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if req.Header.Get(HeaderCallbackID) == "" {
		req.Header.Set(HeaderCallbackID, d.ID)
	}
	req.Header.Set(HeaderAttempt, strconv.Itoa(d.Attempt))
	if h.Header != nil {
		h.Header(req.Header, d)
	}

	resp, err := h.send(req)
	if err != nil {
		return err
	}
	// Drain a little so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{Code: resp.StatusCode}
	}
	return nil
}

// send sends req and returns the answer, redirects not followed. A client
// without a cookie jar or a timeout, the usual one, is bypassed for its
// transport: http.Client.Do would copy the request's headers for
// redirects it must not follow and set up a timer it has no use for, a
// tenth of a delivery's CPU. Errors read as Client.Do's do.
func (h *HTTPDeliverer) send(req *http.Request) (*http.Response, error) {
	if c := h.Client; c != nil && (c.Jar != nil || c.Timeout != 0) {
		client := *c
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return client.Do(req)
	}
	var rt http.RoundTripper = http.DefaultTransport
	if h.Client != nil && h.Client.Transport != nil {
		rt = h.Client.Transport
	}
	if u := req.URL.User; u != nil && req.Header.Get("Authorization") == "" {
		// As Client.Do does: a deliver_to with credentials in it is
		// Basic authentication.
		password, _ := u.Password()
		req.SetBasicAuth(u.Username(), password)
	}
	resp, err := rt.RoundTrip(req)
	if err == nil && resp == nil {
		err = errors.New("http: RoundTripper returned a nil *Response with a nil error")
	}
	if err != nil {
		return nil, &url.Error{Op: "Post", URL: stripPassword(req.URL), Err: err}
	}
	if resp.Body == nil {
		resp.Body = http.NoBody
	}
	return resp, nil
}

// stripPassword is u with its password, if any, shown as Client.Do shows
// it in errors.
func stripPassword(u *url.URL) string {
	if _, ok := u.User.Password(); ok {
		return strings.Replace(u.String(), u.User.String()+"@", u.User.Username()+":***@", 1)
	}
	return u.String()
}
