// Package reconcile is the gateway's reconciler: it polls Atlas's
// extracts for the batches whose results are late, and delivers each
// document found available through the durable queue exactly as a
// callback is delivered, marking it received with source poll. It
// knows nothing of Caddy: the plugin gives it a ledger.Store, a Fetcher
// (HTTPFetcher over the gateway's Atlas client), an Enqueuer (the
// queue, with the callback route's masking and signing) and an
// Observer (metrics and tracing).
//
// # A poll
//
// Start's loop reads the due batches from the ledger (Store.Due, a page
// of DuePage at a time, every ScanEvery) and polls each, at most
// Concurrency at a time. A poll takes the batch's lease (TakeLease,
// owner "<instance>-<counter>", unique to the poll), pages extracts
// until has_next is false or total_pages is reached (an empty page
// does not end it: the pending documents may be left out), and for
// each page claims the documents found available and still pending
// (Store.Claim, source poll), then hands the won ones to the queue as
// one Delivery: {"data":[...]}, the elements byte for byte as Atlas
// sent them. It then releases the lease (ReleaseLease), which schedules
// the next poll PollEvery later or expires the batch at GiveUpAfter;
// the report then lists the missing documents. The lease is renewed
// between pages once half of it has run, so that a long poll keeps it.
//
// A document is available when its element of data has a non-empty
// file_data (not absent, null or {}) or an error_code (in file_data or
// beside it); anything else is still pending. An error_code makes the
// document failed in the ledger, and it is delivered like the others.
//
// # Delivery ids and repair
//
// A poll's delivery id is "poll-" and 40 hex digits of SHA-256 over the
// batch id and, sorted by id, each claimed document's id and the
// SHA-256 of its element. It is the queue entry's id, so the queue
// deduplicates a delivery handed to it twice.
//
// A claim is made before its append to the queue. If the append fails,
// or the instance dies in between, the documents are received in the
// ledger under a delivery id that never reached the queue. The poll
// that saw the queue refuse does not release the lease: it holds it
// under "<owner>~requeue" until its next poll; a poll that dies leaves
// its lease as it was. The next poll of the batch, by any instance,
// finds an expired lease that is not a backoff's ("~backoff") and
// repairs: every document received through a poll delivery is claimed
// again with that delivery's id (ApplyClaim: won again by the same id,
// nothing changes) and handed to the queue under it, grouped as it was
// claimed, with the bytes read now. A delivery that had reached the
// queue is deduplicated there; so the queue must remember delivered
// ids for longer than twice GiveUpAfter (the spool's retention, 7 days
// by default, does for the default 72h). A repair that fails before it
// is done (Atlas unreachable) holds the batch under "~requeue" too.
// Repairs go on until twice GiveUpAfter after the upload; then the
// lease is released, and the report lists the deliveries given up on
// (PollReport.Dropped: their documents are received in the ledger and
// will not reach the app; the plugin logs them as an error).
//
// A claim that wins a batch's last pending documents completes it, and
// a release at the give-up time expires it; the ledger keeps the poll's
// lease on a batch so finished (ledger.Batch.Settle) until the poll
// releases it, after its appends. A poll that dies before that leaves
// the finished batch due when its lease ends, and TakeLease admits it:
// the next poll repairs it as above. A refusal by the queue holds a
// finished batch under "~requeue" as it does a processing one.
//
// What the ledger lacks:
//
//   - Policy.WithDefaults turns PollAfter 0 into 15m, so poll_after 0
//     (poll-only: every batch polled from its upload) cannot be said;
//     the nearest is a PollAfter of a nanosecond. The ledger needs a
//     way to say zero (a negative value meaning 0, or a PollOnly flag).
//   - The lease has no start time nor any record of a poll's failures:
//     the backoff of a batch is held in its lease ("~backoff", until
//     the end of the Retry-After), and a repair re-queues every poll
//     delivery of the batch rather than only the dead poll's.
//
// # Bounds
//
// Requests: a token bucket of Rate extracts requests per second,
// burst 1, for every batch of the instance, on its clock. After a 429
// every poll of the instance waits for its Retry-After (or, without
// one, BackoffMin doubled per consecutive failure up to BackoffMax);
// after a 5xx or a network error, every poll waits for the backoff too
// (or the 5xx's Retry-After). The batch itself is polled again at its
// next poll, or at the end of the Retry-After if that is later (its
// lease held until then). Other 4xx (an unknown batch) leave the batch
// to its next poll, until it expires.
//
// Rate is per instance: a fleet of N instances on a shared store sends
// up to N times Rate. Configure poll_rate as the fleet's rate divided
// by the instances, or share it: the JetStream store could hand out
// request slots from a key-value entry (a compare-and-set of the next
// free slot time, each instance reserving a few slots at a time), which
// keeps the fleet at Rate whatever the instances; or the batches'
// leases could be partitioned so that each instance polls a share.
//
// One poll of a batch in flight: the lease, in the ledger, fleet-wide
// with a shared store; a dead instance's lease runs out after LeaseTTL
// and another takes the batch over. Goroutines: one loop and at most
// Concurrency polls; memory: a page of the due scan, and a poll's
// batch and current page, whatever the number of batches kept.
//
// # Observing
//
// Observer.PollStart opens a span per poll; its context carries it to
// the extracts requests and to Enqueue, so the queue can store the
// trace with the delivery. Observer.PollEnd reports the outcome (ok,
// throttled, failed, expired: the metric of polls by outcome), the
// documents delivered, and the missing documents of an expired batch.
package reconcile
