// Package atlastest simulates the Atlas Docstream API, and Atlas's bulk
// service, for tests and demos.
//
// Atlas itself is unreachable from development machines, so every test of
// the Atlas client and of the caddy-atlas plugin runs against this
// simulator. It is an independent implementation of the documented
// contract (docs.helloatlas.in): it shares no code with the client it
// tests, and it imports nothing of Caddy. The Caddy module
// github.com/caddy-atlas/caddy-atlas/simulator serves it from a Caddy
// server for curl and the README's quick start.
//
// THE SIMULATOR IS FOR TESTS AND DEMOS ONLY. Its control endpoints under
// /_sim/ are unauthenticated, let anyone revoke tokens or inject faults,
// and make the server POST to any URL; never expose it to real traffic.
//
// # Atlas endpoints
//
// Paths are matched exactly.
//
//	POST /v1/docstream/authtoken    headers Client-Id, Client-Secret
//	  200 {"access_token": "<HS256 JWT>", "expires_in": <seconds>}
//	  400 {"error": "Missing Client-Id or Client-Secret"}
//	  401 {"error_code": "401", "error_message": "Invalid client credentials"}
//
//	POST /v1/docstream/multiupload  header Token, JSON body
//	  {"product_type": "LOAN_APP", "file_urls": [{"file_url": "...", "document_id": "..."}]}
//	  201 [{"batch_id", "document_id", "file_uuid"}, ...]   (UploadResponseArray, default)
//	  201 {"batch_id": "..."}                               (UploadResponseObject)
//	  400 {"error": "..."} naming what is missing or malformed
//	  401 {"error": "Invalid or expired token"}
//	  413 body over 10 MiB; 415 Content-Type not application/json (both undocumented)
//
//	GET /v1/docstream/extracts?batch_id=&page=&per_page=   header Token
//	  200 {"data": [{"document_id", "file_data"}], "page", "per_page",
//	       "total_pages", "total_items", "has_next", "has_prev"}
//	  400 {"error": "batch_id is required"}, or a bad page/per_page
//	  401 {"error": "Invalid or expired token"}
//	  404 {"error": "batch not found"}   (undocumented by Atlas)
//
//	POST /v1/bulk/authtoken, POST /v1/bulk/multiupload, GET /v1/bulk/extracts
//	  the bulk service: the same requests and answers as above
//
// Unknown paths answer 404 and wrong methods 405, both with {"error": ...}.
// Any endpoint answers 429 {"error": "Too many requests"} with
// Retry-After (whole seconds) to a client over a rate limit
// (Options.RateLimits, SetRateLimit); ThrottleNext makes the next calls
// answer 429 regardless. Every request is logged with its time on the
// simulator's clock and its client (Requests), so a test can check how
// fast a client polls (PeakRate). Atlas documents no rate limits.
//
// Behaviour the Atlas documentation leaves open, and what the simulator
// does:
//   - A batch's documents are processed the moment it is created, unless
//     a processing delay is set (Options.ProcessingDelay,
//     SetProcessingDelay): then each document ends processing that long
//     after its upload on the simulator's clock (Options.Now), so a test
//     with a fake clock steps through it. A range gives each document its
//     own delay, derived from its document id (ProcessingDelayFor);
//     ReadyAt tells when a batch's last document is done.
//   - While a batch is processing, extracts answers every document that
//     is done with its file_data (an unclassifiable one with its
//     error_code inside file_data) and shows the others by
//     Options.PendingDocuments: {"document_id"} with no file_data
//     (PendingListed, the default), {"document_id", "file_data": {}}
//     (PendingEmpty), or not at all (PendingOmitted). total_items and
//     total_pages always count every document, so a client knows a
//     batch is complete when every document it uploaded has a non-empty
//     file_data or an error_code. Atlas does not document this state.
//   - page defaults to 1 and per_page to 50; per_page above 50 is capped at
//     50 and the response reports the effective per_page; a page past the
//     end has empty data and correct totals; total_pages is 0 for an
//     empty batch.
//   - Tokens are real HS256 JWTs (sub, iss, iat, exp, jti and a private
//     "gen" revocation generation) signed with a random per-simulator key.
//     exp has one-second resolution like any JWT, so a token may expire up
//     to a second before iat+expires_in as measured with sub-second clocks.
//     Only the Token header is read: Authorization: Bearer is not accepted.
//   - Documents are extracted deterministically from their document id;
//     see Classify for how the document type is chosen. An unclassifiable
//     document has document_type "UNKNOWN" plus error_code and
//     error_message.
//   - document_type is a plain string (DocumentTypeString) or a
//     {value, confidence_score} object (DocumentTypeObject).
//   - The bulk service takes the same credentials but issues its own
//     tokens: a docstream token answers 401 at bulk and a bulk token 401
//     at docstream (the documentation is silent; a token carries a
//     private "svc" claim). One-live-token holds per client per service.
//     A batch is read only at the service that took it (404 at the
//     other; CreateBulkBatch makes a bulk one), and bulk batches never
//     get automatic callbacks: polling is their only channel. Their
//     endpoint names, for the knobs, are bulk/authtoken,
//     bulk/multiupload and bulk/extracts.
//   - At most 10000 batches are kept; the least recently used are forgotten first.
//
// # Control endpoints
//
// Unauthenticated, JSON in and out, for scripts driving a simulator served
// by Caddy:
//
//	POST /_sim/revoke                            RevokeAll
//	POST /_sim/fail?endpoint=&n=&status=         FailNext (status 0 resets the connection)
//	POST /_sim/delay?endpoint=&n=&ms=            DelayNext
//	GET  /_sim/counters                          {"authtoken": n, "multiupload": n, "extracts": n}
//	POST /_sim/reset                             Reset (counters, faults, delays, deliveries, and the knobs set since start)
//	POST /_sim/token-lifetime?seconds=           SetTokenLifetime
//	POST /_sim/one-live-token?enabled=true|false SetOneLiveToken (issuing a token revokes the client's previous ones)
//	POST /_sim/processing-delay?ms=&max_ms=      SetProcessingDelay (max_ms omitted: a fixed delay)
//	POST /_sim/pending-documents?form=listed|empty|omitted  SetPendingDocuments
//	POST /_sim/callback                          DeliverCallback; body
//	     {"auth_url", "callback_url", "client_id", "client_secret", "batch_id"}
//	     answers the Delivery: 200 if delivered, 502 if not
//	GET  /_sim/deliveries                        Deliveries
//	POST /_sim/throttle?endpoint=&n=&retry_after= ThrottleNext: 429 with Retry-After (seconds, default 1)
//	POST /_sim/rate-limit?endpoint=&per_second=  SetRateLimit (0 lifts it; endpoint empty: all together)
//	GET  /_sim/requests?endpoint=&client=&window_ms=  {"requests": Requests, "peak": PeakRate, "window_ms"}
//	POST /_sim/auto-callback                     SetAutoCallback; body
//	     {"auth_url", "callback_url", "client_id", "client_secret",
//	      "per": "batch"|"document", "delay_ms", "drop", "drop_nth": [n],
//	      "repeat", "repeat_nth": [n], "seed"}; no callback_url switches them off
//	GET  /_sim/callbacks                         {"counts": CallbackCounts, "callbacks": Callbacks}
//
// endpoint is one of authtoken, multiupload, extracts, bulk/authtoken,
// bulk/multiupload, bulk/extracts, or empty for any. /_sim/counters
// counts docstream's endpoints, /_sim/counters?service=bulk the bulk
// service's.
//
// # Callbacks
//
// DeliverCallback plays Atlas delivering results: it POSTs to the
// customer's auth_url with Client-Id and Client-Secret headers, reads
// access_token from the JSON answer, then POSTs the batch's extraction
// payload (the shape of an extracts response holding every document on
// page 1) to callback_url with the header Token: <access_token>.
//
// With Options.AutoCallback (or SetAutoCallback) the simulator delivers
// callbacks by itself, as Atlas does for an account with callbacks
// enabled: when a docstream batch's documents are done, on the
// simulator's clock, it delivers the batch (or, per document, each
// document alone as page 1 of 1) to the target, after an optional
// delay. Callbacks are numbered from 1 in the order they fall due; a
// fraction or a list of them is dropped, or sent twice in a row, chosen
// by number and seed, so every run of a test sees the same ones.
// Callbacks and CallbackCounts tell what was sent, delivered, failed,
// dropped and repeated. The simulator looks for due callbacks every 10ms
// of real time; a test stepping a fake clock calls FlushCallbacks to
// have them sent before it goes on. A failed delivery is not retried.
package atlastest
