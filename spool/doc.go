// Package spool makes Atlas callbacks durable: a callback is appended to
// a log on disk and fsynced before it is acknowledged, then delivered,
// at least once, until the receiver takes it. It knows nothing of Caddy.
//
// The route and the admin API depend on queue.Store. FileSpool, from
// Open, is the single-node backend; queue.HTTPDeliverer is the usual
// Options.Deliver.
//
//	sp, err := spool.Open("/var/lib/caddy/atlas-spool", spool.Options{
//		Deliver: (&queue.HTTPDeliverer{URL: "http://app:8080/atlas"}).Deliver,
//		Logger:  logger,
//	})
//	...
//	res, err := sp.Append(ctx, queue.Entry{ID: id, Header: h, Body: body})
//	switch {
//	case errors.Is(err, queue.ErrUnavailable): // 503 + Retry-After
//	case err != nil: // 500
//	default: // 202 {"status": "accepted", "callback_id": res.ID}
//	}
//
// # Guarantees
//
// Append returns nil only once the callback's record is written and
// fsynced (and, for a new segment file, the directory too), so a kill -9
// at any moment loses no acknowledged callback. Concurrent appends share
// one fsync: a single writer goroutine takes every request queued while
// it was writing and syncs once for all of them (group commit). State
// changes (attempts, deliveries) ride the same batches and are synced
// with the next append or within a second; losing some in a crash only
// means a redelivery, which at-least-once delivery allows (the receiver
// deduplicates on X-Atlas-Callback-Id).
//
// A callback whose id is stored, pending or dead or delivered within
// Options.Retention, is acknowledged again without being stored twice.
//
// Delivery takes the oldest due callback first, with up to
// Options.Concurrency in parallel. A failed attempt is retried after an
// exponential backoff with jitter, in a separate queue, so one failing
// callback holds up no other; after Options.MaxAttempts it is dead until
// retried or deleted.
//
// # On-disk format
//
// The directory holds a LOCK file (flock'ed while open) and log segments
// named by a 16-hex-digit number, e.g. 0000000000000001.seg; the highest
// is the one being appended to, and a new one starts when it reaches
// Options.SegmentSize. A segment is a sequence of records:
//
//	offset size  field
//	0      4     magic 00 53 50 01 ("\x00SP" and format version 1)
//	4      4     CRC-32C (Castagnoli) of bytes 8 to the end, little-endian
//	8      4     payload length n, little-endian (at most 1 GiB)
//	12     1     record type
//	13     n     payload
//
// Payload fields are unsigned varints (uvarint), signed varints for
// times (Unix nanoseconds, 0 for none), and strings as a uvarint length
// then the bytes:
//
//	1 enqueue    id, received, header count, (name, value)..., body (the rest)
//	2 attempt    id, time, attempts, next attempt, last error
//	3 delivered  id, time, received, body size, attempts
//	4 dead       id, time
//	5 retry      id, time (due again at this time, attempts reset)
//	6 delete     id, time
//	7 base       highest segment number superseded
//	8 sealed     id, received, body size, sealed blob (the rest): the
//	             header count, pairs and body of an enqueue record,
//	             sealed by package seal (version, key id, nonce,
//	             AES-256-GCM ciphertext and tag)
//
// Every record states a value, never a change, so replaying one twice is
// harmless. Open replays all segments in order into an index in memory;
// bodies are read from disk when delivered. A record that does not verify
// is skipped with a warning by scanning for the next valid one; invalid
// bytes at the end of the last segment (a write torn by a crash) are
// truncated. No body can forge a record: the magic starts with a NUL
// byte, which JSON text and header values cannot contain.
//
// # Encryption at rest
//
// With Options.Keyring, callbacks are written as sealed records: their
// headers and bodies are encrypted under the keyring's first key, with a
// fresh nonce, the record's id, received time and body size bound as
// additional data, the key id in the blob. Any key of the keyring opens
// them, on delivery and Load. Compaction rewrites what it keeps under
// the first key, so that a key can be rotated (a new first key, the old
// one second until KeyStats shows nothing under it) and a plaintext
// spool is migrated once a key is configured; the spool compacts itself
// for that. A record whose key is missing, or that fails authentication,
// stays: Load and each delivery attempt fail with an error naming the
// callback (and the key id), and compaction copies it as it is. A spool
// holding sealed records needs this version of the package: older ones
// ignore the records of type 8.
//
// # Retention
//
// A dead callback is kept, body included, for
// Options.DeadLetterRetention (30 days) after its last attempt, then
// purged: a delete record, a warning naming it, and
// RetentionObserver.DeadLetterExpired. A body no longer needed
// (delivered, deleted, purged) sets a deadline, Options.PurgeDelay (10
// minutes) later, on the segment holding it, by which a compaction of
// that segment starts: so such a body is in no spool file after
// PurgeDelay plus the time of one compaction, unless compactions fail
// (then they are retried every minute). Compaction removes the files; it
// does not overwrite the freed blocks, which is what encryption at rest
// is for.
//
// # Compaction
//
// The spool compacts segment by segment, so that what stands (a backlog
// of dead letters, pending callbacks) is not rewritten again and again:
// a sealed segment is compacted when it holds a body due to leave the
// disk, or when at least half of it is garbage (and the log's garbage
// exceeds both its live data and 16 MiB). Adjacent segments are compacted
// together, up to Options.SegmentSize, and so is a neighbour no larger
// than what they keep, so that small segments merge. The segment being
// written is sealed first only if it holds a body due to leave. Compact,
// a spool nearly full, and records to rewrite under the keyring's first
// key compact all the sealed segments into one.
//
// A run of segments is replaced by one numbered as its last, holding,
// for each callback with a record in them: if homed there, its enqueue
// record and its attempt and dead records, or its delivered record
// within the retention window; if homed in an older segment, the records
// of its current state; if gone, a delete record while an older segment,
// not rewritten since it went, may hold a record that would bring it
// back. It is written to a temporary file, fsynced, renamed over the
// last segment of the run, and the directory fsynced, before the others
// are removed. A run that starts at the oldest segment begins with a
// base record: Open removes the segments below it that a crash during
// compaction left behind; the others left behind are replayed before
// the new segment, which is harmless (what it holds of a callback is
// newer, and its delete records cover theirs), and compacted later. A
// run that would keep nothing is removed.
package spool
