package ledger

import (
	"context"
	"errors"
	"time"
)

// Matched is the outcome of MatchClaims.
type Matched struct {
	// Claims are the claims made, one per batch, in the order made; the
	// Won documents of each are those to queue for the app.
	Claims []ClaimResult
	// Taken are the documents that another delivery won in every batch
	// that holds them: acknowledged to Atlas, not delivered again.
	Taken []string
	// Unknown are the documents that no batch holds.
	Unknown []string
}

// Won returns the number of documents won.
func (m Matched) Won() int {
	n := 0
	for _, c := range m.Claims {
		n += len(c.Won)
	}
	return n
}

// MatchClaims claims the results of a callback, which names documents
// and no batch: for each document, in the batch where c.DeliveryID won
// it already (a retry of the same delivery), else the newest batch
// where it is still pending. A document that loses a race for its batch
// is matched again against the other batches where it is pending, each
// tried once, so that concurrent callbacks for one document id spread
// over the batches that wait for it. When the
// callback names its batch, the router calls Store.Claim on that batch
// instead.
func MatchClaims(ctx context.Context, s Store, c Claim) (Matched, error) {
	if err := CheckClaim(c); err != nil {
		return Matched{}, err
	}
	var m Matched
	tried := map[string]map[string]bool{} // document id -> batch ids tried
	results := dedupeResults(c.Results)
	for len(results) > 0 {
		byBatch := map[string][]Result{}
		var order []string
		all, err := lookupEach(ctx, s, results)
		if err != nil {
			return m, err
		}
		for i, r := range results {
			refs := all[i]
			target := ""
			for _, ref := range refs {
				if ref.DeliveryID == c.DeliveryID && ref.State != DocPending {
					target = ref.BatchID
					break
				}
			}
			if target == "" {
				for _, ref := range refs {
					if ref.State == DocPending && !tried[r.DocumentID][ref.BatchID] {
						target = ref.BatchID
						break
					}
				}
			}
			switch {
			case target != "":
			case len(refs) == 0:
				m.Unknown = append(m.Unknown, r.DocumentID)
				continue
			default:
				m.Taken = append(m.Taken, r.DocumentID)
				continue
			}
			if tried[r.DocumentID] == nil {
				tried[r.DocumentID] = map[string]bool{}
			}
			tried[r.DocumentID][target] = true
			if byBatch[target] == nil {
				order = append(order, target)
			}
			byBatch[target] = append(byBatch[target], r)
		}
		results = nil
		for _, id := range order {
			cr, err := s.Claim(ctx, id, Claim{Source: c.Source, DeliveryID: c.DeliveryID, Results: byBatch[id]})
			if errors.Is(err, ErrNotFound) { // purged meanwhile
				for _, r := range byBatch[id] {
					m.Unknown = append(m.Unknown, r.DocumentID)
				}
				continue
			}
			if err != nil {
				return m, err
			}
			if len(cr.Won) > 0 {
				m.Claims = append(m.Claims, cr)
			}
			for _, doc := range cr.Taken { // lost a race: try the others
				results = append(results, resultOf(byBatch[id], doc))
			}
		}
	}
	return m, nil
}

// lookupEach looks up the documents of rs: in one read with a store
// that can (BoltStore.LookupEach), else one Lookup each.
func lookupEach(ctx context.Context, s Store, rs []Result) ([][]DocRef, error) {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.DocumentID
	}
	if le, ok := s.(interface {
		LookupEach(context.Context, []string) ([][]DocRef, error)
	}); ok {
		return le.LookupEach(ctx, ids)
	}
	all := make([][]DocRef, len(ids))
	for i, id := range ids {
		refs, err := s.Lookup(ctx, id)
		if err != nil {
			return nil, err
		}
		all[i] = refs
	}
	return all, nil
}

func dedupeResults(rs []Result) []Result {
	seen := make(map[string]bool, len(rs))
	out := make([]Result, 0, len(rs))
	for _, r := range rs {
		if !seen[r.DocumentID] {
			seen[r.DocumentID] = true
			out = append(out, r)
		}
	}
	return out
}

func resultOf(rs []Result, doc string) Result {
	for _, r := range rs {
		if r.DocumentID == doc {
			return r
		}
	}
	return Result{DocumentID: doc}
}

// Unclaim releases the documents of a batch that delivery deliveryID
// claimed, when the delivery could not be queued: they are pending
// again, the batch processing, and due for a poll at once, so that a
// poll, or Atlas's retry of the callback, brings their results again.
// Documents another delivery claimed are left alone.
func Unclaim(ctx context.Context, s Store, batchID, deliveryID string) error {
	_, err := s.Update(ctx, batchID, func(b *Batch) (bool, error) {
		changed := false
		for i := range b.Documents {
			d := &b.Documents[i]
			if d.DeliveryID == deliveryID && d.State != DocPending {
				*d = Document{ID: d.ID, FileUUID: d.FileUUID, State: DocPending}
				changed = true
			}
		}
		if changed {
			b.State, b.Finished = StateProcessing, time.Time{}
			b.NextPoll = b.Uploaded // due now
		}
		return changed, nil
	})
	return err
}
