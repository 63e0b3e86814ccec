// Package ledger is the gateway's record of the uploads Atlas accepted:
// each batch and its documents, followed to their results whichever
// channel brings them (a callback, or a poll of extracts), so that the
// app gets each document's result exactly once and the gateway can say
// whether a batch is done. It also keeps the Idempotency-Key records of
// the upload route. It knows nothing of Caddy.
//
// Store is the interface; BoltStore (Open) keeps the ledger in one bbolt
// file, FileName, in the spool's directory; JetStreamStore
// (OpenJetStream) keeps it in a JetStream key-value bucket shared by
// every instance, with the shared rules of this package (Batch.Settle,
// Batch.ApplyClaim, TakeLease, ReleaseLease, BeginIdem) inside its
// compare-and-set loop. Package ledgertest is the behavioural suite both
// run.
//
// The ledger holds ids, states and times: never field values, never file
// URLs. An idempotency record holds the answer given to the app, which
// carries ids only.
//
// # Life of a batch
//
// The upload route records a batch (Create) once Atlas has accepted it
// and before it answers the app: every document pending, the batch
// processing, its first poll due PollAfter after the upload. A result
// (from a callback, or a poll) is claimed (Claim), which marks the
// document received, or failed with Atlas's error_code. Once no document
// is pending the batch is complete. The reconciler lists the batches due
// (Due), takes a batch's lease (TakeLease), polls extracts, claims what
// it found, and releases the lease (ReleaseLease), which schedules the
// next poll PollEvery later, or expires the batch if it is GiveUpAfter
// old with documents still pending (its last poll comes at GiveUpAfter
// at the latest). A batch is overdue while processing PollAfter after
// its upload. Finished batches (complete or expired) are purged
// Retention after they finished (Purge). Without polling configured the
// reconciler still runs the Due, TakeLease, ReleaseLease loop, without
// the poll, so that batches expire.
//
// # Invariants
//
//  1. A document's state goes from pending to received or failed, once;
//     its Source, At, ErrorCode and DeliveryID are set in the same write
//     and never change after. The only way back is the batch's purge.
//  2. A claim is a compare-and-set of one batch: every document of a
//     claim that was pending at the write is won by it, atomically, and
//     a concurrent claim of another delivery finds it taken. Of any
//     number of concurrent claims with distinct delivery ids, exactly
//     one wins each document.
//  3. A claim with the DeliveryID that won a document wins it again
//     (changing nothing). So the router claims, then appends the won
//     results to the queue under that delivery id, then acknowledges
//     Atlas: if it dies in between, Atlas's retry of the same callback
//     (same delivery id, derived from what Atlas sent) wins the same
//     documents and appends them, and the queue's deduplication on the
//     id keeps a retry that follows a completed append from being
//     delivered twice. A result whose document was won by another
//     delivery is acknowledged to Atlas and not queued.
//  4. So each document's result is queued at most once per delivery id,
//     and only under the delivery id that won it: exactly once to the
//     app, given the queue's at-least-once delivery and the app's
//     deduplication on X-Atlas-Callback-Id.
//  5. A batch's State follows its documents: processing while one is
//     pending (or expired, if it was given up on), complete once none
//     is; a finished batch has Finished set, and no next poll unless a
//     lease is still on it: a poll's claim that finishes a batch keeps
//     the poll's lease until the poll has queued what it claimed and
//     released it, so that, should the poll die in between, the batch
//     is due again when the lease ends, and the next poll repairs it
//     (TakeLease admits a finished batch with a lease). Every store
//     applies Batch.Settle after each change.
//  6. Every write increases the batch's Revision; an Update whose batch
//     changed between its read and its write is redone on the new state
//     (bbolt: the read-write transaction excludes that; JetStream
//     key-value: update on the entry's revision, retried; Revision is
//     the entry's revision).
//  7. A lease is held by one owner until LeaseUntil: TakeLease by
//     another owner fails with ErrLeaseHeld until then, so that two
//     polls of one batch are never in flight as long as a poll lasts
//     less than its lease. A taken batch is due again at LeaseUntil, so
//     a dead owner's batch is taken over. Claims do not need the lease:
//     a poll whose lease expired may still claim, and loses the
//     documents another delivery won.
//  8. The document index (Lookup) holds, for every document of every
//     batch kept, its batch, its state and its delivery id, in step
//     with the batch (same transaction in bbolt; in JetStream, an index
//     key written before the batch, the state read from the batch).
//  9. No operation loads every batch: Due and List read a page from
//     indexes sorted by time; Lookup reads the batches of one document
//     id; Purge deletes in bounded transactions.
//  10. An Idempotency-Key is owned by at most one request at a time:
//     Begin returns IdemNew (with a token) to exactly one of concurrent
//     requests; the others see IdemInFlight (same body) or IdemMismatch
//     (another body). Only the token's holder may Finish or Abandon,
//     and only while the record is in flight: after InFlightTimeout a
//     repeat takes the key over with a new token, and the old holder's
//     Finish fails with ErrNotOwner. Records are kept IdempotencyWindow
//     from the first request.
//
// # Matching a callback
//
// A callback carries document ids, and no batch id, and the caller's
// document ids may repeat across batches. MatchClaims maps a callback's
// results onto batches: for each document, the batch where this delivery
// id already won it (a retry), else the newest batch where it is pending;
// a document pending nowhere was delivered before (Taken) or is unknown.
//
// # Watching
//
// Watch signals every committed change of a batch: the wait endpoint
// watches, reads the batch, and waits for a signal or its deadline. In
// BoltStore the signal is sent in-process right after the commit; a
// shared store signals changes made by any instance.
//
// # bbolt layout
//
// One bucket holds the batches (id -> JSON); the others are indexes
// whose keys end with the batch id: due (next poll time), uploaded
// (inverted upload time: newest first), processing/complete/expired
// (same, by state), finished (finish time, for Purge), docs (document
// id, length-prefixed, then inverted upload time, then batch id -> the
// document's state and delivery id); idem (key -> record) and idemexp
// (expiry time, key). Times are big-endian Unix nanoseconds. Each change
// is one read-write transaction, fsynced on commit (bbolt's default), so
// a batch whose Create returned survives a kill -9.
//
// # JetStream layout
//
// OpenJetStream takes a connected jetstream.JetStream (so that the
// queue's connection, with its URLs, credentials and TLS, may be shared)
// and a bucket, DefaultBucket unless configured, with Replicas (3 by
// default, as the queue; 1 for a single server). Its stream, KV_<bucket>,
// is made by OpenJetStream: history 2, rollups, per-message TTLs, and no
// direct gets, so that every read is answered by the stream's leader
// (a follower's direct get may lag: a waiter could read a batch older
// than the change it missed before it watched). Keys ("<id>" is an id
// escaped into one token: itself if made of letters, digits, '-' and
// '_', else '=' and its base64url; <b> a bucket number, time divided by
// the bucket width; <t> 16 hex digits that sort as the time; <-t> the
// same inverted, newest first):
//
//	b.<batch>                      the batch, JSON (the record)
//	d.<document>.<batch>           document index (Lookup)
//	due.<b minute>.<t next poll>.<batch>  due index (Due)
//	l.all.<b hour>.<-t uploaded>.<batch>  List, every batch
//	l.<state>.<b hour>.<-t uploaded>.<batch>  List by state; Stats
//	f.<b minute>.<t finished>.<batch>  finished batches (Purge)
//	i.<key>                        idempotency record, JSON (the record)
//	x.<b minute>.<t expires>.<key>  idempotency expiries (Purge)
//	r.due, r.list, r.fin, r.exp    range of a time index: {lo, hi} buckets
//
// A reader lists the keys of one document, or of a run of time buckets,
// with key filters (d.<document>.*, due.<b>.*.* for the buckets from the
// range's floor up to now): an ephemeral pull consumer, last per
// subject, headers only, which the servers answer from their subject
// index. (History 2 matters there: with 1, nats-server serves
// last-per-subject as deliver-all and walks the whole stream for the
// filter.) No operation lists every key; Stats counts the state keys.
// A page holds at most limit entries in memory (the least of each run of
// buckets); its cost is the keys in the buckets it lists, not the
// batches kept. Due, List and Lookup then read each batch listed, and
// return what the batch says: an index key only nominates.
//
// Consistency without transactions. The record is the truth; index keys
// may be extra, never missing:
//
//  1. A change reads the record at revision R, computes the new state,
//     puts the index keys the new state needs and the old one lacks
//     (each valued {r: R, w: the writer's clock}; R is 0 for a create),
//     widens the ranges (after the puts), then writes the record by
//     compare-and-set on R (kv.Create for a new batch). Only then does
//     it remove the keys the old state needed and the new one does not.
//     A writer that dies at any point leaves extra keys, never a
//     committed state without its keys: a due batch is always listed,
//     a document always found.
//  2. An extra key is removed (a compare-and-set delete on the key's
//     revision, so a key written again meanwhile stays) only when no
//     writer can still commit a state that needs it: the record is at
//     a revision above the key's r (a writer that read r either
//     committed or will fail its compare-and-set; a later writer that
//     needs the key puts it again), or the record is gone with its
//     delete marker above r, or gone and r is not 0, or the key is an
//     unfinished Create's older than OrphanGrace. A key whose r is the
//     record's revision stays: its writer may be about to commit.
//     Readers (Due, List, Lookup, Purge) and the writers themselves,
//     after a lost race, apply this rule to the extra keys they meet.
//  3. Time indexes are listed bucket by bucket between the range's lo
//     and hi. A writer widens the range after putting its key. A
//     scanner raises lo over the empty buckets at the bottom, by
//     compare-and-set on the revision it read before listing, and never
//     above the current bucket (due, idempotency expiries) or the one
//     Retention ago (finished, list). A writer whose bucket is within
//     reach of such a raise (up to MaxClockSkew ahead of its clock)
//     rewrites the range even when it covers the bucket, so that a
//     scan that listed the bucket before the put fails its raise.
//
// Leases and idempotency records are fields of their records, changed
// by the same compare-and-set: of concurrent TakeLease or Begin calls,
// on any instances, one wins. Expiry compares the store's clock with the
// stored times (LeaseUntil, Started, Expires), never the servers'
// clocks; instances whose clocks differ by a few seconds see a lease or
// an in-flight record expire that much apart, which is why a lease's ttl
// must exceed a poll by more than MaxClockSkew (default 30s). Purge
// deletes, by the store's clock, the batches finished Retention ago and
// the idempotency records past their window (each by compare-and-set,
// then its index keys); per-message TTLs only make the delete markers of
// removed keys vanish after a minute (a server TTL runs on the servers'
// clock, not the ledger's).
//
// Watch: one watcher per store, started by the first Watch, on b.*
// (updates only, headers only) signals every change of a watched batch
// by any instance; this process's own commits signal at once, and a
// revision is signalled once whichever path sees it first.
package ledger
