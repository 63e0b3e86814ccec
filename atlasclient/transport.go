package atlasclient

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// DefaultTokenHeader is the request header that carries the access token.
const DefaultTokenHeader = "Token"

// maxDrain bounds how much of a 401 body is read before the connection is
// given back, so that it can be reused.
const maxDrain = 64 << 10

// Transport is an http.RoundTripper that authenticates requests to Atlas
// with tokens from Source. Any Authorization header and any header named
// like Header (in any case) set by the caller is replaced. When Atlas
// answers 401, the token is invalidated and the request is replayed once
// with a fresh token, provided its body can be replayed (no body, or
// GetBody set, as http.NewRequest does for in-memory bodies).
type Transport struct {
	// Source provides the tokens. Required.
	Source *TokenSource
	// Base makes the requests. Default http.DefaultTransport.
	Base http.RoundTripper
	// Header carries the token. Default "Token".
	Header string
	// OnReplay, if not nil, is called each time a request is replayed
	// after a 401.
	OnReplay func()

	// lastToken caches the header values of the last token sent.
	lastToken atomic.Pointer[[]string]
}

// RoundTrip sends req with a token, replaying it once after a 401. It
// returns the error of Source.Token, without sending anything, when no
// token can be had. Response bodies are not buffered.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.Source == nil {
		closeBody(req)
		return nil, errors.New("atlas: transport has no token source")
	}
	ctx := req.Context()
	tok, err := t.Source.Token(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.base().RoundTrip(t.authorize(req, tok.Value))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil
	}

	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
	t.Source.Invalidate(tok.Value)
	tok, err = t.Source.Token(ctx)
	if err != nil {
		return nil, err
	}
	replay := t.authorize(req, tok.Value)
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		replay.Body = body
	}
	if t.OnReplay != nil {
		t.OnReplay()
	}
	return t.base().RoundTrip(replay)
}

// authorize returns a copy of req that carries token and no credentials
// of the caller. The copy is shallow but for its header map, which is
// new: RoundTrippers do not modify requests, so the URL and the header
// values can be shared with req. (Request.Clone copies all of them,
// about seven allocations per request, a tenth of the whole exchange.)
func (t *Transport) authorize(req *http.Request, token string) *http.Request {
	header := t.Header
	if header == "" {
		header = DefaultTokenHeader
	}
	r := new(http.Request)
	*r = *req
	r.Header = make(http.Header, len(req.Header)+1)
	for k, v := range req.Header {
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, header) {
			continue
		}
		r.Header[k] = v
	}
	r.Header[http.CanonicalHeaderKey(header)] = t.tokenValues(token)
	return r
}

// tokenValues returns the header values carrying token: the same slice
// for as long as the token stays the same, shared by the requests
// (RoundTrippers do not modify requests).
func (t *Transport) tokenValues(token string) []string {
	if v := t.lastToken.Load(); v != nil && (*v)[0] == token {
		return *v
	}
	v := []string{token}
	t.lastToken.Store(&v)
	return v
}
func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// closeBody closes the body of a request that will not be sent, as the
// http.RoundTripper contract requires.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
