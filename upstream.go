package caddyatlas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/atlasclient"
)

// Route names, as they appear in metrics and logs.
const (
	routeExtracts = "extracts"
	routeUpload   = "upload"
)

// errTokenRefused is returned by exchange when Atlas still answered 401
// after the transport replayed the request with a fresh token.
var errTokenRefused = errors.New("atlas refused a fresh token of the gateway's")

// exchange sends req to Atlas through the token-injecting transport and
// records it in the metrics. A 401 that survived the transport's one
// replay is turned into errTokenRefused: it is the gateway's credentials
// that failed, not the client's.
func (h *Handler) exchange(ctx context.Context, r *http.Request, route string, req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", "caddy-atlas")
	if id := r.Header.Get("X-Request-Id"); id != "" {
		req.Header.Set("X-Request-Id", id)
	}
	start := time.Now()
	resp, err := h.upstream.Do(req)
	if err != nil {
		h.metrics.observeUpstream(route, 0, time.Since(start))
		return nil, err
	}
	h.metrics.observeUpstream(route, resp.StatusCode, time.Since(start))
	if resp.StatusCode == http.StatusUnauthorized {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, errTokenRefused
	}
	return resp, nil
}

// writeExchangeError answers the client for an upstream exchange that
// produced no response. The gateway's own failures are 502 (504 past the
// timeout) with an error in Atlas's shape; a client that went away gets
// nothing. ctx is the exchange's context.
func (h *Handler) writeExchangeError(ctx context.Context, w http.ResponseWriter, r *http.Request, err error) error {
	var creds *atlasclient.CredentialsError
	switch {
	case r.Context().Err() != nil:
		// The client gave up; there is no one to answer.
		return caddyhttp.Error(499, r.Context().Err())

	case errors.As(err, &creds), errors.Is(err, errTokenRefused):
		h.logger.Error("atlas refused the gateway's credentials",
			zap.String("client_id", h.clientID),
			zap.String("endpoint", h.endpoint.Redacted()),
			zap.Error(err))
		return writeError(w, http.StatusBadGateway, "atlas refused the gateway's credentials; check the client_id and client_secret configured for the atlas handler")

	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		if c := h.logger.Check(zapcore.WarnLevel, "atlas did not answer in time"); c != nil {
			c.Write(zap.Duration("timeout", time.Duration(h.Timeout)), zap.Error(err))
		}
		return writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("atlas did not answer within %s", time.Duration(h.Timeout)))

	case errors.Is(err, atlasclient.ErrTokenUnavailable):
		h.logger.Warn("no atlas token available",
			zap.String("client_id", h.clientID), zap.Error(err))
		return writeError(w, http.StatusBadGateway, "the gateway could not get an atlas token; atlas's authtoken endpoint is failing")
	}
	if c := h.logger.Check(zapcore.WarnLevel, "atlas is unreachable"); c != nil {
		c.Write(zap.String("endpoint", h.endpoint.Redacted()), zap.Error(err))
	}
	return writeError(w, http.StatusBadGateway, "atlas is unreachable")
}
