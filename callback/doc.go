// Package callback is the callback route of the atlas handler: Atlas's
// auth_url, where Atlas authenticates and is issued a short-lived JWT,
// and its callback_url, where Atlas POSTs extraction results with that
// token. A callback goes through a pipeline, in this order, so that an
// unauthenticated caller never makes the server read a body:
//
//	verify the token (package token: keys, JWKS, verification, cache)
//	-> read the body (package body: pooled buffers)
//	-> validate the payload (package payload: a one-pass scanner)
//	-> hand it off: to the next handler (synchronous mode), or to a
//	   durable queue (package queue; spool is the local implementation,
//	   jsqueue the one a fleet shares on NATS JetStream)
//	   that delivers it to the app at least once.
//
// This package is the Caddy glue of that pipeline; the packages it uses
// know nothing of Caddy. It is configured as the `callback` block of the
// `atlas` handler, whose package holds the Caddyfile parser.
package callback
