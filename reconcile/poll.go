package reconcile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// Suffixes of the lease owner a poll leaves on a batch it holds back
// instead of releasing: the lease then expires at the end of the
// backoff, and the batch is due again. An expired lease whose owner
// does not end in holdBackoff was left by a poll whose deliveries may
// not all have reached the queue: it died, or the queue refused one
// (holdRequeue).
const (
	holdBackoff = "~backoff"
	holdRequeue = "~requeue"
)

// Poll polls one batch now, if its lease can be taken: it pages the
// batch's extracts, claims and queues the documents found available,
// and releases the lease (or holds the batch back, after a failure).
// Scan calls it for each due batch; a test may call it directly. A
// batch whose lease is not taken (held by another poll, not due,
// finished, unknown) is left alone: the report's Outcome is "" and Err
// says why.
func (r *Reconciler) Poll(ctx context.Context, batchID string) PollReport {
	prev, err := r.store.Get(ctx, batchID)
	if err != nil {
		return PollReport{BatchID: batchID, Err: err}
	}
	if prev.State != ledger.StateProcessing && prev.LeaseOwner == "" {
		return PollReport{BatchID: batchID, Err: ledger.ErrNotDue}
	}
	owner := r.owner()
	b, err := r.store.TakeLease(ctx, batchID, owner, r.opts.LeaseTTL)
	if err != nil {
		return PollReport{BatchID: batchID, Err: err}
	}
	// An expired lease left on the batch, other than a backoff's: the
	// poll that held it may have claimed documents it did not queue.
	repair := prev.LeaseOwner != "" && !strings.HasSuffix(prev.LeaseOwner, holdBackoff)

	start := r.now()
	pctx := r.obs.PollStart(ctx, batchID)
	rep := PollReport{BatchID: batchID, Owner: owner, Repair: repair}
	p := &poll{r: r, ctx: pctx, b: b, owner: owner, rep: &rep, leaseUntil: b.LeaseUntil, repair: repair}
	var fetchErr error
	// A finished batch is taken only to repair it (a backoff's lease
	// left on a batch that a callback finished has nothing to repair:
	// it is released).
	if r.opts.Fetcher != nil && (b.State == ledger.StateProcessing || repair) {
		fetchErr = p.run()
	}
	r.finish(p, fetchErr)
	rep.Took = r.now().Sub(start)
	r.obs.PollEnd(pctx, rep)
	return rep
}

// finish classifies the poll's error, then releases the lease or holds
// the batch back, and settles the report.
func (r *Reconciler) finish(p *poll, fetchErr error) {
	rep := p.rep
	var delay time.Duration // the batch's backoff
	throttled := false
	var se *StatusError
	switch {
	case fetchErr == nil:
	case p.ctx.Err() != nil:
		// Cancelled (Close): the lease is left to expire, and the next
		// poll of the batch repairs whatever this one left undone.
		rep.Outcome, rep.Err = OutcomeFailed, fetchErr
		return
	case errors.As(fetchErr, &se) && se.API.StatusCode == http.StatusTooManyRequests:
		throttled = true
		delay = r.lim.fail(se.RetryAfter)
	case errors.As(fetchErr, &se) && se.API.StatusCode >= 500:
		delay = max(se.RetryAfter, r.lim.fail(se.RetryAfter))
	case se != nil:
		// Another 4xx (a 404 for a batch Atlas does not know, a 401 that
		// a fresh token did not cure): this batch's problem, not Atlas's;
		// it is polled again at its next poll, until it expires.
		r.lim.ok()
	case errors.Is(fetchErr, errLeaseLost), errors.Is(fetchErr, errStore):
		// Not Atlas's doing: no backoff.
	default:
		delay = r.lim.fail(0) // network, or an answer that would not decode
	}
	rep.Err = fetchErr
	// Held back to be repaired: a refused delivery, and a repair that did
	// not finish (what the poll it repairs claimed may still be
	// unqueued).
	requeue := len(p.unqueued) > 0 || (fetchErr != nil && (p.repair || len(p.groups) > 0))
	if rep.Err == nil && len(p.unqueued) > 0 {
		rep.Err = p.enqueueErr
	}

	var b *ledger.Batch
	var err error
	switch {
	case errors.Is(fetchErr, errLeaseLost):
		// Another poll has the batch: nothing of ours to release.
	case requeue && !r.now().Before(p.b.Uploaded.Add(2*r.opts.Policy.GiveUpAfter)):
		// Repaired for as long again as the batch was followed: give up
		// on what could not be queued (the queue may not remember the
		// deliveries made meanwhile any more, and would take them again).
		rep.Dropped = p.undelivered()
		b, err = r.store.ReleaseLease(context.WithoutCancel(p.ctx), p.b.ID, p.owner)
	case requeue:
		b, err = r.hold(p, holdRequeue, max(delay, r.opts.Policy.PollEvery))
	case delay > r.opts.Policy.PollEvery:
		b, err = r.hold(p, holdBackoff, delay)
	default:
		b, err = r.store.ReleaseLease(context.WithoutCancel(p.ctx), p.b.ID, p.owner)
	}
	if err != nil && rep.Err == nil {
		rep.Err = err
	}
	switch {
	case b != nil && b.State == ledger.StateExpired:
		rep.Outcome = OutcomeExpired
		for _, d := range b.Documents {
			if d.State == ledger.DocPending {
				rep.Missing = append(rep.Missing, d.ID)
			}
		}
	case throttled:
		rep.Outcome = OutcomeThrottled
	case rep.Err != nil:
		rep.Outcome = OutcomeFailed
	default:
		rep.Outcome = OutcomeOK
	}
	if b != nil {
		rep.NextPoll = b.NextPoll
	}
}

// hold keeps the lease on the batch until now+d under the owner's name
// with suffix, so that no poll takes it before then. A backoff does not
// outlast the batch: at its give-up time the lease is released instead,
// which expires the batch. A requeue holds a batch whatever its state,
// finished included (the ledger keeps a finished batch's lease, see
// ledger.Batch.Settle): the poll that takes it when the hold ends
// repairs it, queuing what this one could not.
func (r *Reconciler) hold(p *poll, suffix string, d time.Duration) (*ledger.Batch, error) {
	ctx := context.WithoutCancel(p.ctx)
	now := r.now()
	until := now.Add(d)
	if suffix == holdBackoff {
		giveUp := p.b.Uploaded.Add(r.opts.Policy.GiveUpAfter)
		if !now.Before(giveUp) {
			return r.store.ReleaseLease(ctx, p.b.ID, p.owner)
		}
		if until.After(giveUp) {
			until = giveUp
		}
	}
	return r.store.Update(ctx, p.b.ID, func(b *ledger.Batch) (bool, error) {
		if b.LeaseOwner != p.owner {
			if b.State != ledger.StateProcessing {
				// Finished, and a repairing poll took the expired lease
				// over: it queues what this one claimed.
				return false, nil
			}
			return false, fmt.Errorf("%w: lease of %q", ledger.ErrNotOwner, b.ID)
		}
		b.LeaseOwner, b.LeaseUntil, b.NextPoll = p.owner+suffix, until, until
		return true, nil
	})
}

// Errors that end a poll without being Atlas's doing.
var (
	// errLeaseLost: the poll's lease expired and another owner took it.
	errLeaseLost = errors.New("reconcile: lease lost")
	// errStore: the ledger failed.
	errStore = errors.New("reconcile: ledger")
)

// poll is one poll of a batch in progress.
type poll struct {
	r          *Reconciler
	ctx        context.Context
	b          *ledger.Batch // as of the last claim
	owner      string
	rep        *PollReport
	leaseUntil time.Time
	repair     bool

	index      map[string]int        // document id -> index in b.Documents
	seen       map[string]bool       // documents seen available this poll
	expect     map[string]int        // repair: poll delivery id -> its documents
	groups     map[string][]document // repair: the documents of a delivery found so far
	unqueued   []Delivery            // refused by the queue
	enqueueErr error
}

// run pages the extracts and handles each page.
func (p *poll) run() error {
	r := p.r
	p.index = make(map[string]int, len(p.b.Documents))
	for i, d := range p.b.Documents {
		p.index[d.ID] = i
	}
	p.seen = map[string]bool{}
	if p.repair {
		p.expect, p.groups = map[string]int{}, map[string][]document{}
		for _, d := range p.b.Documents {
			if d.State != ledger.DocPending && d.Source == ledger.SourcePoll && d.DeliveryID != "" {
				p.expect[d.DeliveryID]++
			}
		}
	}
	for page := 1; page <= r.opts.MaxPages; page++ {
		if err := p.renew(); err != nil {
			return err
		}
		if err := r.lim.wait(p.ctx); err != nil {
			return err
		}
		res, err := r.opts.Fetcher.Page(p.ctx, p.b.ID, page)
		p.rep.Requests++
		if err != nil {
			return err
		}
		r.lim.ok()
		if err := p.handle(res.Data); err != nil {
			return err
		}
		// Not a page without data: with the pending documents left out
		// (as the simulator's PendingOmitted does), a page may be empty
		// while later ones are not.
		if !res.HasNext || (res.TotalPages > 0 && page >= res.TotalPages) || (len(res.Data) == 0 && res.TotalPages == 0) {
			break
		}
	}
	// Every page read: a repaired delivery whose documents are not all
	// available any more is queued with those that are.
	for id, g := range p.groups {
		delete(p.groups, id)
		if err := p.deliver(id, g); err != nil {
			return err
		}
	}
	return nil
}

// renew extends the lease when half of it has run out.
func (p *poll) renew() error {
	ttl := p.r.opts.LeaseTTL
	if p.r.now().Before(p.leaseUntil.Add(-ttl / 2)) {
		return nil
	}
	b, err := p.r.store.TakeLease(p.ctx, p.b.ID, p.owner, ttl)
	switch {
	case errors.Is(err, ledger.ErrLeaseHeld), errors.Is(err, ledger.ErrNotDue):
		return fmt.Errorf("%w: %v", errLeaseLost, err)
	case err != nil:
		return fmt.Errorf("%w: renewing the lease of %q: %w", errStore, p.b.ID, err)
	}
	p.leaseUntil = b.LeaseUntil
	return nil
}

// document is an available element of data.
type document struct {
	id   string
	raw  json.RawMessage
	code string // error_code
	idx  int    // in the batch
	sum  [sha256.Size]byte
}

// handle claims and queues the documents of one page.
func (p *poll) handle(data []json.RawMessage) error {
	var fresh []document
	for _, raw := range data {
		d, ok := inspect(raw)
		if !ok {
			continue
		}
		i, known := p.index[d.id]
		if !known || p.seen[d.id] {
			continue
		}
		p.seen[d.id] = true
		p.rep.Available++
		d.idx = i
		ld := p.b.Documents[i]
		switch {
		case ld.State == ledger.DocPending:
			fresh = append(fresh, d)
		case p.repair && ld.Source == ledger.SourcePoll && p.expect[ld.DeliveryID] > 0:
			g := append(p.groups[ld.DeliveryID], d)
			if len(g) < p.expect[ld.DeliveryID] {
				p.groups[ld.DeliveryID] = g
				continue
			}
			delete(p.groups, ld.DeliveryID)
			if err := p.deliver(ld.DeliveryID, g); err != nil {
				return err
			}
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	return p.deliver(deliveryID(p.b.ID, fresh), fresh)
}

// deliver claims docs under id and queues those the claim won. Only a
// store error is returned; a refused delivery is kept in p.unqueued.
func (p *poll) deliver(id string, docs []document) error {
	c := ledger.Claim{Source: ledger.SourcePoll, DeliveryID: id, Results: make([]ledger.Result, len(docs))}
	for i, d := range docs {
		c.Results[i] = ledger.Result{DocumentID: d.id, ErrorCode: d.code}
	}
	cr, err := p.r.store.Claim(p.ctx, p.b.ID, c)
	if err != nil {
		return fmt.Errorf("%w: claiming %d documents of %q: %w", errStore, len(docs), p.b.ID, err)
	}
	p.b = cr.Batch
	p.rep.Taken += len(cr.Taken)
	p.rep.Claimed += cr.Claimed
	if cr.Completed {
		p.rep.Completed, p.rep.UploadToComplete = true, cr.Batch.Finished.Sub(cr.Batch.Uploaded)
	}
	won := make(map[string]bool, len(cr.Won))
	for _, w := range cr.Won {
		won[w] = true
	}
	docs = slices.DeleteFunc(slices.Clone(docs), func(d document) bool { return !won[d.id] })
	if len(docs) == 0 {
		return nil
	}
	slices.SortFunc(docs, func(a, b document) int { return a.idx - b.idx })
	del := Delivery{ID: id, BatchID: p.b.ID, Body: body(docs), DocumentIDs: make([]string, len(docs))}
	for i, d := range docs {
		del.DocumentIDs[i] = d.id
	}
	if err := p.r.opts.Enqueuer.Enqueue(p.ctx, del); err != nil {
		p.unqueued = append(p.unqueued, del)
		p.enqueueErr = err
		return nil
	}
	p.rep.Delivered += len(docs)
	p.rep.Deliveries = append(p.rep.Deliveries, id)
	return nil
}

// undelivered returns the ids of the deliveries that this poll claimed
// and did not queue, and, for a repair, those it was to queue again and
// did not.
func (p *poll) undelivered() []string {
	var ids []string
	for _, d := range p.unqueued {
		ids = append(ids, d.ID)
	}
	for id := range p.expect {
		if !slices.Contains(p.rep.Deliveries, id) && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// body returns {"data":[...]} of the documents' elements, verbatim.
func body(docs []document) []byte {
	n := len(`{"data":[]}`)
	for _, d := range docs {
		n += len(d.raw) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `{"data":[`...)
	for i, d := range docs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, d.raw...)
	}
	return append(b, "]}"...)
}

// deliveryID derives a poll delivery's id from the batch id and the
// claimed documents' ids and content (SHA-256 of each element as Atlas
// sent it), whatever their order: "poll-" and 40 hex digits.
func deliveryID(batchID string, docs []document) string {
	docs = slices.Clone(docs)
	slices.SortFunc(docs, func(a, b document) int { return strings.Compare(a.id, b.id) })
	h := sha256.New()
	h.Write([]byte(batchID))
	h.Write([]byte{0})
	for _, d := range docs {
		h.Write([]byte(d.id))
		h.Write([]byte{0})
		h.Write(d.sum[:])
	}
	return "poll-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// inspect decodes an element of data and reports whether the document
// is available: a non-empty file_data, or an error_code (in file_data,
// or beside it). Absent, null or empty ({}) file_data without an
// error_code means still pending, as does an element without a
// document_id.
func inspect(raw json.RawMessage) (document, bool) {
	var v struct {
		DocumentID string          `json:"document_id"`
		FileData   json.RawMessage `json:"file_data"`
		ErrorCode  json.RawMessage `json:"error_code"`
	}
	if json.Unmarshal(raw, &v) != nil || v.DocumentID == "" {
		return document{}, false
	}
	code := text(v.ErrorCode)
	filled := false
	switch fd := bytes.TrimSpace(v.FileData); {
	case len(fd) > 0 && fd[0] == '{':
		var m map[string]json.RawMessage
		if json.Unmarshal(fd, &m) == nil {
			filled = len(m) > 0
			if code == "" {
				code = text(m["error_code"])
			}
		}
	case len(fd) == 0, string(fd) == "null", string(fd) == `""`, string(fd) == "[]":
	default:
		filled = true // an unexpected shape, but something
	}
	if !filled && code == "" {
		return document{}, false
	}
	return document{id: v.DocumentID, raw: raw, code: code, sum: sha256.Sum256(raw)}, true
}

// text returns a non-null JSON string's value, "" otherwise.
func text(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}
