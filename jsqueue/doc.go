// Package jsqueue is the durable callback queue of a fleet: a
// queue.Store on NATS JetStream, with the semantics of spool.FileSpool
// (the same behavioural suite, queue/queuetest, runs against both), for
// several Caddy instances that share the streams. Every instance appends,
// every instance delivers, and any instance lists, retries or purges any
// callback: the state is in NATS, none in local memory. It knows nothing
// of Caddy.
//
//	q, err := jsqueue.Open(jsqueue.Options{
//		URLs:    []string{"nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"},
//		Deliver: (&queue.HTTPDeliverer{URL: "http://app:8080/atlas"}).Deliver,
//		Logger:  logger,
//	})
//
// # Streams
//
// With the default stream name ATLAS_CALLBACKS (Options.Stream), Open
// creates, or checks, three file-backed streams of Options.Replicas each:
//
//	ATLAS_CALLBACKS        work queue, subjects ATLAS_CALLBACKS.q.<key>: one
//	                       message per pending callback; a shared durable
//	                       pull consumer "deliver", explicit acks
//	ATLAS_CALLBACKS_DEAD   dead letters, ATLAS_CALLBACKS_DEAD.<key>, kept until
//	                       retried or purged (nats stream view shows them)
//	ATLAS_CALLBACKS_STATE  state records, ATLAS_CALLBACKS_STATE.<kind>.<key>,
//	                       one per callback and kind, JSON: f (failed
//	                       attempts of a pending one), k (dead), d
//	                       (delivered, with a message TTL of the retention
//	                       window), x (deleted by an operator, kept for the
//	                       duplicate window); durable consumers that are
//	                       never pulled, "count-delivered" and
//	                       "count-dead", count the d and k records
//
// <key> is the callback id with '.' written '='. The newest record of a
// key, whatever its kind, is the callback's state; a pending callback
// that never failed has none. An existing stream with other replicas,
// retention policy, subjects, storage, per-subject limit or TTL setting
// is an error of Open naming the field, both values and the stream:
// Open never changes a stream.
//
// The work message carries the callback's headers and body in its data
// (an envelope: a format byte, the header pairs, the body), sealed with
// Options.Keyring if set (AES-256-GCM, the callback id as additional
// data; the state records hold no payload, only ids, sizes, times,
// attempt counts and the receiver's last error). Its NATS headers hold
// the callback id, the received time and the body size.
//
// # Guarantees and order of operations
//
// Append reads the callback's state record (a dead one, or one delivered
// within the retention window, is a duplicate), then publishes the work
// message with Nats-Msg-Id set to the callback id and "no message on this
// subject yet" as the expected last sequence, and returns once the
// stream's servers acknowledged it: for R3 once two of the three hold
// it. A pending callback (expected-sequence conflict) or one published
// within the duplicate window (JetStream's de-duplication, 2 minutes, of
// the stream's leader, so across instances) is a duplicate stored once.
// No step after the publish can lose the callback, and nothing before it
// makes a callback a duplicate that was not stored: a crash or timeout
// between two steps leaves at worst a callback stored but answered 503,
// whose retry by Atlas is then a duplicate. If NATS is unreachable, or
// the ack does not come within Options.PublishTimeout (tries that get no
// answer are tried again within it), Append fails with
// an error wrapping queue.ErrUnavailable (the route answers 503 with
// Retry-After); the client reconnects by itself, without a reopen.
//
// The fsync caveat: nats-server syncs its files to disk on an interval
// (sync_interval, 2 minutes by default), not per message. An R3 ack means
// that three servers (at least two) hold the message in memory or page
// cache: it survives the loss of any one node, a process crash, a kill -9
// of the stream leader, but not the simultaneous power loss of all of
// them. sync_interval: always on the servers closes that, at a cost in
// throughput. An R1 stream on one server survives a process crash but not
// that server's disk. The local spool fsyncs before each ack (group
// commit) but lives on one instance's disk.
//
// Delivery: each instance pulls from the shared consumer as many
// callbacks as it has free delivery slots (Options.Concurrency). While
// it delivers one, it tells the servers every AckWait/3 that it is in
// progress; if the instance dies, the servers hand its callbacks to
// another instance after Options.AckWait. An attempt reads the state
// record first (a callback whose outcome was recorded but whose ack was
// lost is acked without a second delivery), then delivers, then records
// the outcome with a compare-and-set on the callback's newest record, and
// only then acks: a delivered record (for the retention window) then the
// ack; a failure record then a nak with queue.Backoff's delay (BackoffMin
// doubling up to BackoffMax, less up to 20% of jitter); after MaxAttempts
// failures, the dead letter, a dead record, then the ack. An attempt
// cancelled by Close is handed back at once and does not count; an
// attempt cut short by a crash does not count either (nothing was
// recorded). If an operator deleted or retried the callback meanwhile,
// the compare-and-set fails and the outcome is ignored. Delivery is at
// least once: recording an outcome that gets no answer (a connection
// lost, a leader election) is tried again until Options.PublishTimeout,
// and a delivery whose outcome still could not be recorded (NATS lost
// for that long, or the instance killed between the delivery and the
// record) is delivered again, with the same X-Atlas-Callback-Id, which is
// the receiver's deduplication key.
//
// Retry publishes a dead callback to the work stream again, then removes
// its dead record and letter; for a pending one it publishes a copy and
// deletes the old message, so that it is due at once with no failed
// attempts. Delete writes a deletion record, then purges the callback's
// messages and records; a deleted id is accepted again (with a message id
// of its own, as JetStream may still hold the old one in its duplicate
// window).
//
// # Cost per callback
//
// Measured by TestCostPerCallback (16 KiB bodies, R1, no Keyring), on
// each replica's disk: while pending, the body plus about 300 bytes (the
// envelope's headers, the NATS headers, the store's record); once
// delivered, about 410 bytes (the delivered record) for the retention
// window, then nothing; a dead callback keeps its body plus about 750
// bytes (letter and record) until retried or purged; a Keyring adds 37
// bytes to the data. Each server also keeps in memory an index entry per
// subject with messages (one per pending callback in the work stream,
// one per callback within the retention window in the state stream: the
// subject, about 40 bytes, plus the store's per-subject bookkeeping), a
// timer-wheel entry per record with a TTL, and, for the duplicate
// window, one entry per recent message id; that memory was not measured
// here, the structures suggest one to two hundred bytes per delivered
// callback. So a fleet taking a million callbacks a day holds about
// seven million delivered records: some 3 GB per replica on disk and an
// index of the order of a gigabyte in each server's memory; a shorter
// Options.Retention shrinks both. The Caddy instances keep nothing per
// callback but their deliveries in progress.
//
// List with a limit reads the limit oldest pending callbacks, two
// requests each (the message and its state), whatever the backlog; the
// dead and delivered ones, and every callback for RetryAll or a List
// without a limit, are read in full (a request per pending callback, a
// consumer over the state records), so those suit an operator, not a
// hot path. Get, Load, Retry and Delete take a few requests, and Stats
// a few, whatever the number of callbacks.
package jsqueue
