package callback

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/callback/payload"
	"github.com/caddy-atlas/caddy-atlas/internal/batchmetrics"
	"github.com/caddy-atlas/caddy-atlas/internal/httpjson"
	"github.com/caddy-atlas/caddy-atlas/ledger"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// Headers of a delivery of a known batch.
const (
	headerAtlasBatchID      = "X-Atlas-Batch-Id"
	headerAtlasResultSource = "X-Atlas-Result-Source"
)

// UseLedger gives the route the ledger of batches (the atlas app's):
// ledgerOf returns it once it is open, nil before. Call it before
// Provision; only durable routes use it.
func (c *Callback) UseLedger(ledgerOf func() ledger.Store) { c.ledgerOf = ledgerOf }

// spoolBatches stores a verified callback with the ledger of batches:
// its documents are claimed in the batches that wait for them (see
// ledger.MatchClaims), and one delivery per batch carries the documents
// this callback won, named by X-Atlas-Batch-Id; documents another
// delivery took already are acknowledged and not delivered again;
// documents the ledger does not know go in one delivery of their own,
// deduplicated by the body Atlas sent, as a callback is. raw is the
// body as Atlas sent it, body the one the app gets (masked: the same
// elements, in the same order); id is the callback's id, that of raw,
// and the claims' delivery id, so that Atlas's retry claims the same
// documents again. A delivery the queue does not take releases its
// claims (ledger.Unclaim) before Atlas is refused: its documents are
// pending again, for Atlas's retry or a poll.
func (c *Callback) spoolBatches(w http.ResponseWriter, r *http.Request, store ledger.Store, id, subject string, raw, body []byte) error {
	docs, err := payload.Documents(body)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("reading the documents of callback %s: %w", id, err))
	}
	// Unmasked, body is raw: read once.
	same := len(raw) == len(body) && (len(raw) == 0 || &raw[0] == &body[0])
	rawDocs := docs
	if !same {
		rawDocs, err = payload.Documents(raw)
		if err != nil || len(rawDocs) != len(docs) {
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("reading the documents of callback %s as Atlas sent it: %v", id, err))
		}
	}
	var results []ledger.Result
	for _, d := range docs {
		if d.Available {
			results = append(results, ledger.Result{DocumentID: d.ID, ErrorCode: d.ErrorCode})
		}
	}
	var m ledger.Matched
	if len(results) > 0 {
		m, err = ledger.MatchClaims(r.Context(), store, ledger.Claim{Source: ledger.SourceCallback, DeliveryID: id, Results: results})
		if err != nil {
			if r.Context().Err() != nil {
				return caddyhttp.Error(statusClientClosedRequest, err)
			}
			c.logger.Error("callback refused: the ledger of batches cannot claim it", zap.String("callback_id", id), zap.Error(err))
			w.Header().Set("Retry-After", spoolRetryAfter)
			return httpjson.WriteError(w, http.StatusServiceUnavailable, "the callback cannot be stored right now; retry later")
		}
	}
	won := make(map[string]string, m.Won()) // document id -> batch id
	claims := make(map[string]ledger.ClaimResult, len(m.Claims))
	for _, cr := range m.Claims {
		claims[cr.Batch.ID] = cr
		for _, doc := range cr.Won {
			won[doc] = cr.Batch.ID
		}
	}
	taken := make(map[string]bool, len(m.Taken))
	for _, doc := range m.Taken {
		taken[doc] = true
	}
	const unknown = ""
	key := func(_ int, d payload.Document) (string, bool) {
		if b, ok := won[d.ID]; ok {
			return b, true
		}
		if taken[d.ID] {
			return "", false // delivered already, by another delivery
		}
		return unknown, true // unknown to the ledger, or still pending at Atlas
	}
	groups := payload.Split(body, docs, key)
	rawGroups := groups
	if !same {
		rawGroups = payload.Split(raw, rawDocs, key)
	}
	if len(taken) > 0 {
		c.metrics.lateDuplicates.Add(float64(len(taken)))
	}
	if len(groups) == 0 {
		c.metrics.callbacks.WithLabelValues(outcomeDuplicate).Inc()
		return writeAck(w, id, true)
	}
	duplicate := true
	for gi, g := range groups {
		entryID := id
		switch {
		case len(groups) == 1 && len(g.Indexes) == len(docs):
			// The whole callback: its own id.
		case g.Key == unknown:
			// Documents the ledger does not know: deduplicated by their
			// body as Atlas sent it, as a whole callback is.
			entryID = ID(rawGroups[gi].Body)
		default:
			// A batch's part of the callback: an id of its own, the same
			// for Atlas's retry of the same callback.
			sum := sha256.Sum256([]byte(id + "\x00" + g.Key))
			entryID = id + "-" + hex.EncodeToString(sum[:4])
		}
		hdr := make(http.Header, 6)
		if ct := r.Header.Get("Content-Type"); ct != "" {
			hdr.Set("Content-Type", ct)
		}
		hdr.Set(headerAtlasSubject, subject)
		hdr.Set(headerAtlasDocumentCount, strconv.Itoa(len(g.Indexes)))
		hdr.Set(headerAtlasCallbackID, entryID)
		if g.Key != unknown {
			hdr.Set(headerAtlasBatchID, g.Key)
			hdr.Set(headerAtlasResultSource, string(ledger.SourceCallback))
		} else {
			c.metrics.unmatched.Add(float64(len(g.Indexes)))
		}
		storeTraceContext(r.Context(), hdr)
		err := errNotOpen
		var res queue.AppendResult
		if st := c.waitOpen(r.Context()); st != nil {
			res, err = st.Append(r.Context(), queue.Entry{ID: entryID, Header: hdr, Body: g.Body})
		}
		if err != nil {
			c.unclaim(r, store, id, groups[gi:])
			return c.refuse(w, r, entryID, g.Body, err)
		}
		duplicate = duplicate && res.Duplicate
		if g.Key != unknown {
			batchmetrics.Claimed(ledger.SourceCallback, claims[g.Key])
		}
	}
	outcome := outcomeAccepted
	if duplicate {
		outcome = outcomeDuplicate
	}
	c.metrics.callbacks.WithLabelValues(outcome).Inc()
	return writeAck(w, id, duplicate)
}

// unclaim releases the claims of the callback id for the batches of
// groups, whose deliveries were not stored.
func (c *Callback) unclaim(r *http.Request, store ledger.Store, id string, groups []payload.Group[string]) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	for _, g := range groups {
		if g.Key == "" {
			continue
		}
		if err := ledger.Unclaim(ctx, store, g.Key, id); err != nil {
			c.logger.Error("releasing the claims of a callback the queue did not take: its documents stay received until a poll",
				zap.String("callback_id", id), zap.String("batch_id", g.Key), zap.Error(err))
		}
	}
}

// spoolWithLedger stores a callback with the ledger of batches, once it
// is open: it opens as the config starts, before the routes' queues.
func (c *Callback) spoolWithLedger(w http.ResponseWriter, r *http.Request, id, subject string, raw, body []byte) error {
	store := c.ledgerOf()
	if store == nil && c.waitOpen(r.Context()) != nil {
		store = c.ledgerOf()
	}
	if store == nil {
		return c.refuse(w, r, id, body, fmt.Errorf("%w: the ledger of batches is not open yet", queue.ErrUnavailable))
	}
	return c.spoolBatches(w, r, store, id, subject, raw, body)
}

// EnqueuePolled stores documents that polling found (their elements of
// an extracts page, as body {"data":[...]}) in the route's queue, for
// delivery to the app as a callback is delivered: masked as the route
// masks, signed at each attempt, with X-Atlas-Batch-Id and
// X-Atlas-Result-Source: poll. id is the delivery id the documents were
// claimed with: the queue entry's id, so that a repeat is a duplicate.
func (c *Callback) EnqueuePolled(ctx context.Context, id, batchID string, documents int, body []byte) error {
	masked, release, err := c.maskBody(body)
	defer release()
	if err != nil {
		return fmt.Errorf("masking polled results of %s: %w", batchID, err)
	}
	hdr := make(http.Header, 6)
	hdr.Set("Content-Type", "application/json")
	hdr.Set(headerAtlasDocumentCount, strconv.Itoa(documents))
	hdr.Set(headerAtlasCallbackID, id)
	hdr.Set(headerAtlasBatchID, batchID)
	hdr.Set(headerAtlasResultSource, string(ledger.SourcePoll))
	storeTraceContext(ctx, hdr)
	st := c.waitOpen(ctx)
	if st == nil {
		return errNotOpen
	}
	_, err = st.Append(ctx, queue.Entry{ID: id, Header: hdr, Body: masked})
	return err
}

// Durable reports whether the route stores callbacks in a queue.
func (c *Callback) Durable() bool { return c.store != nil }
