package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store is the ledger of batches and idempotency records. BoltStore
// (Open) is the single-node implementation, in a file beside the spool;
// JetStreamStore (OpenJetStream) is the fleet's, in a JetStream
// key-value bucket; both run the same suite (package ledgertest).
//
// Every time a Store sets (Created, received times, leases, expiries) is
// read from its clock (Options.Now). Implementations are safe for
// concurrent use, within a process and, for shared stores, across
// processes.
type Store interface {
	// Create records a batch that Atlas accepted: ID, ProductType,
	// Uploaded (now if zero), IdempotencyKey and the documents' ID and
	// FileUUID are taken from b; every other field is set by the store
	// (documents pending, state processing, the first poll due at
	// Uploaded + PollAfter). A document id given twice is recorded once.
	// It returns the batch as stored, ErrExists if the id is recorded
	// already, ErrInvalid for a batch without id or documents. It returns
	// only once the batch is durable.
	Create(ctx context.Context, b *Batch) (*Batch, error)

	// Get returns a batch, ErrNotFound if there is none with that id.
	Get(ctx context.Context, batchID string) (*Batch, error)

	// Update reads the batch, calls fn with a copy, and if fn reports a
	// change, writes it back unless the batch changed meanwhile, in which
	// case it calls fn again on the new state (compare-and-set on
	// Revision). fn may therefore run several times and must only
	// change its argument. After fn, the store settles the batch (Settle)
	// and keeps its indexes in step. fn must not change ID or a
	// document's ID (ErrInvalid). Update returns the batch as stored (as
	// read, if fn changed nothing), fn's error unchanged, or ErrNotFound.
	Update(ctx context.Context, batchID string, fn func(*Batch) (changed bool, err error)) (*Batch, error)

	// Claim marks the results in c as the outcome of the batch's
	// documents, atomically, for one delivery: see Batch.ApplyClaim for
	// which documents a claim wins. The caller queues for the app only
	// the results of Won. ErrNotFound for an unknown batch; ErrInvalid
	// for a claim without DeliveryID or Source.
	Claim(ctx context.Context, batchID string, c Claim) (ClaimResult, error)

	// Lookup returns where a document id is recorded: one DocRef per
	// batch holding it, first those in which the document is pending,
	// then the others, each group newest batch first. No batch holds it:
	// an empty slice and a nil error. Its memory is in proportion to the
	// number of batches holding that id, not to the ledger's size.
	Lookup(ctx context.Context, documentID string) ([]DocRef, error)

	// Due returns, earliest first, up to limit (at least 1) of the
	// batches whose next poll is due at now, starting after the cursor
	// (a Due.Cursor of a previous page, "" for the start). Reading a page
	// costs in proportion to limit, whatever the number of batches kept.
	Due(ctx context.Context, limit int, cursor string) ([]Due, error)

	// TakeLease gives owner the right to poll a batch for ttl: it
	// succeeds if the batch is processing (or finished with a lease
	// still on it: a poll that finished it and did not release its
	// lease may not have queued what it claimed), its poll is due, and
	// no other owner holds an unexpired lease on it (owner's own lease
	// is renewed). The batch's next poll moves to the lease's end, so
	// that Due does not list it while leased, and lists it again if its
	// owner dies. It returns the batch, ErrLeaseHeld, ErrNotDue (the
	// batch is finished without a lease, or not due yet), or
	// ErrNotFound. An owner string must
	// be unique to one poll in progress (an instance id and a counter),
	// so that two polls of one batch are never in flight.
	TakeLease(ctx context.Context, batchID, owner string, ttl time.Duration) (*Batch, error)

	// ReleaseLease ends owner's lease after a poll and schedules the
	// next: now + PollEvery, or, once the batch is GiveUpAfter old, no
	// later than that; a batch still pending at its give-up time when a
	// lease is released expires; a finished batch is due no more.
	// ErrNotOwner if owner does not hold the
	// lease (it expired, and another owner may have taken it: the poll's
	// claims stand, they are compare-and-set), ErrNotFound.
	ReleaseLease(ctx context.Context, batchID, owner string) (*Batch, error)

	// List returns one page of batches, newest Uploaded first: those in
	// q.State (every state for StateAny; processing batches past
	// PollAfter for StateOverdue), at most q.Limit (at least 1, at most
	// MaxListLimit), starting after q.Cursor. Page.Next is the cursor of
	// the next page, "" after the last.
	List(ctx context.Context, q ListQuery) (Page, error)

	// Watch returns a channel that receives a value (coalesced: one
	// buffered value stands for any number of changes) after each
	// committed change of the batch, by this process or, for a shared
	// store, another. It is closed when ctx is done or the store closes.
	// ErrNotFound if the batch is not recorded. A waiter watches first,
	// then reads the batch, then waits for the channel, so that no
	// change falls between.
	Watch(ctx context.Context, batchID string) (<-chan struct{}, error)

	// Begin starts an upload with an Idempotency-Key: see IdemOutcome.
	// digest identifies the request body (e.g. hex SHA-256 of the body
	// and the account). On IdemNew the caller owns the key until Finish
	// or Abandon, or InFlightTimeout; Begin's Token proves it.
	Begin(ctx context.Context, key, digest string) (IdemResult, error)

	// Finish stores the answer of the upload that Begin gave token, for
	// the repeats within IdempotencyWindow of Begin. ErrNotOwner if the
	// key is no longer token's (its in-flight record expired and another
	// request took it), ErrNotFound if it is gone.
	Finish(ctx context.Context, key, token string, a Answer) error

	// Abandon forgets the in-flight record of token, so that a repeat
	// goes to Atlas again (the upload failed without an answer worth
	// repeating). ErrNotOwner, ErrNotFound as Finish.
	Abandon(ctx context.Context, key, token string) error

	// Purge deletes finished batches whose Finished is Retention ago or
	// more, and idempotency records past their window, and returns how
	// many of each. It works in bounded transactions and may be called
	// at any time, from any number of processes.
	Purge(ctx context.Context) (PurgeResult, error)

	// Stats returns counts for metrics and health checks.
	Stats(ctx context.Context) (Stats, error)

	// Close releases the store and closes the Watch channels.
	Close() error
}

// DocState is the state of one document of a batch.
type DocState uint8

// Document states.
const (
	// DocPending: no result yet.
	DocPending DocState = iota + 1
	// DocReceived: a result arrived and was claimed for delivery.
	DocReceived
	// DocFailed: Atlas answered with an error_code for the document
	// (e.g. UNRECOGNISED); that answer was claimed for delivery too.
	DocFailed
)

var docStateNames = []string{DocPending: "pending", DocReceived: "received", DocFailed: "failed"}

// String returns "pending", "received" or "failed".
func (s DocState) String() string {
	if int(s) < len(docStateNames) && s > 0 {
		return docStateNames[s]
	}
	return fmt.Sprintf("docstate(%d)", uint8(s))
}

// MarshalText encodes the state as its name.
func (s DocState) MarshalText() ([]byte, error) {
	if s < DocPending || s > DocFailed {
		return nil, fmt.Errorf("ledger: unknown document state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name.
func (s *DocState) UnmarshalText(b []byte) error {
	for i, n := range docStateNames {
		if i > 0 && n == string(b) {
			*s = DocState(i)
			return nil
		}
	}
	return fmt.Errorf("ledger: unknown document state %q", b)
}

// Source is the channel a document's result came through.
type Source string

// Sources of results.
const (
	SourceCallback Source = "callback"
	SourcePoll     Source = "poll"
)

// State is the state of a batch, and a filter of List.
type State uint8

// Batch states. StateAny and StateOverdue are filters of List only.
const (
	StateAny State = iota
	// StateProcessing: some documents pending.
	StateProcessing
	// StateComplete: every document received or failed.
	StateComplete
	// StateExpired: documents still pending after GiveUpAfter.
	StateExpired
	// StateOverdue selects in List the processing batches uploaded
	// PollAfter ago or more.
	StateOverdue
)

var stateNames = []string{StateAny: "", StateProcessing: "processing", StateComplete: "complete", StateExpired: "expired", StateOverdue: "overdue"}

// String returns the state's name ("" for StateAny).
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText encodes the state as its name.
func (s State) MarshalText() ([]byte, error) {
	if int(s) >= len(stateNames) {
		return nil, fmt.Errorf("ledger: unknown batch state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes a state name, as ParseState does.
func (s *State) UnmarshalText(b []byte) error {
	v, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseState parses "processing", "complete", "expired", "overdue", or
// "" (StateAny): the state query parameter of the batches listing.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if n == name {
			return State(i), nil
		}
	}
	return StateAny, fmt.Errorf("%w: unknown batch state %q (want processing, complete, expired or overdue)", ErrInvalid, name)
}

// Batch is the record of one upload that Atlas accepted. It holds ids,
// states and times only: never field values, never file URLs.
type Batch struct {
	// ID is Atlas's batch id.
	ID string `json:"id"`
	// ProductType is the upload's product_type.
	ProductType string `json:"product_type,omitempty"`
	// Uploaded is when Atlas accepted the upload.
	Uploaded time.Time `json:"uploaded"`
	// IdempotencyKey is the upload's Idempotency-Key, if any.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Documents are the upload's documents, in its order.
	Documents []Document `json:"documents"`

	// State is processing, complete or expired.
	State State `json:"state"`
	// Finished is when the batch became complete or expired.
	Finished time.Time `json:"finished,omitzero"`
	// NextPoll is when the reconciler polls the batch next (zero once it
	// is finished, unless a lease is still on it: see Settle).
	NextPoll time.Time `json:"next_poll,omitzero"`
	// Polls counts the leases released after a poll.
	Polls int `json:"polls,omitempty"`
	// LeaseOwner holds the batch's poll lease until LeaseUntil.
	LeaseOwner string    `json:"lease_owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Updated is when the batch was last written.
	Updated time.Time `json:"updated"`
	// Revision is the store's revision of the record, which increases
	// with every write: the compare-and-set token. Set by the store.
	Revision uint64 `json:"revision"`
}

// Document is one document of a batch.
type Document struct {
	// ID is the caller's document_id.
	ID string `json:"id"`
	// FileUUID is Atlas's file_uuid, when its answer carried one.
	FileUUID string `json:"file_uuid,omitempty"`
	// State is pending, received or failed.
	State DocState `json:"state"`
	// Source is the channel that brought the result.
	Source Source `json:"source,omitempty"`
	// At is when the result was claimed.
	At time.Time `json:"at,omitzero"`
	// ErrorCode is Atlas's error_code of a failed document.
	ErrorCode string `json:"error_code,omitempty"`
	// DeliveryID is the id of the delivery (queue entry) that carries the
	// result to the app. It is set once, with State, and never changes.
	DeliveryID string `json:"delivery_id,omitempty"`
}

// Counts returns how many documents are in each state.
func (b *Batch) Counts() (pending, received, failed int) {
	for _, d := range b.Documents {
		switch d.State {
		case DocPending:
			pending++
		case DocReceived:
			received++
		case DocFailed:
			failed++
		}
	}
	return
}

// Overdue reports whether the batch is processing and was uploaded
// pollAfter ago or more.
func (b *Batch) Overdue(now time.Time, pollAfter time.Duration) bool {
	return b.State == StateProcessing && !now.Before(b.Uploaded.Add(pollAfter))
}

// Clone returns a deep copy of b.
func (b *Batch) Clone() *Batch {
	c := *b
	c.Documents = append([]Document(nil), b.Documents...)
	return &c
}

// doc returns the index of the document with id, -1 if none.
func (b *Batch) doc(id string) int {
	for i := range b.Documents {
		if b.Documents[i].ID == id {
			return i
		}
	}
	return -1
}

// Settle brings the batch's derived fields in line with its documents,
// at now, with policy p: a processing batch with no pending document is
// complete; a finished batch has Finished set, and no next poll unless
// it still has a lease: then it is due again when the lease ends, so
// that the poll holding it, should it die before its deliveries reach
// the queue, is repaired (see invariant 5); a processing batch is due
// no later than its give-up time. An expired batch whose last pending
// document gets a result becomes complete. Every store calls it after
// each change, so that the state rules live in one place.
func (b *Batch) Settle(now time.Time, p Policy) {
	pending, _, _ := b.Counts()
	switch {
	case pending == 0 && b.State != StateComplete:
		b.State = StateComplete
		b.Finished = now
	case pending > 0 && b.State == StateProcessing:
		giveUp := b.Uploaded.Add(p.GiveUpAfter)
		if b.LeaseOwner != "" && b.LeaseUntil.After(giveUp) {
			// Leased: due again when the lease ends, even past the
			// give-up time (invariant 7), so that Due does not list a
			// batch whose lease is held.
			giveUp = b.LeaseUntil
		}
		if b.NextPoll.IsZero() || b.NextPoll.After(giveUp) {
			b.NextPoll = giveUp
		}
	}
	if b.State != StateProcessing {
		b.NextPoll = b.LeaseUntil
		if b.LeaseOwner == "" {
			b.NextPoll, b.LeaseUntil = time.Time{}, time.Time{}
		}
	}
}

// Claim is a set of results for documents of one batch, carried to the
// app by one delivery.
type Claim struct {
	// Source is the channel that brought the results.
	Source Source
	// DeliveryID identifies the delivery that will carry them: derived
	// from what Atlas sent (e.g. the callback id, a digest of the
	// callback body; for a poll, the batch id and the page's digest), so
	// that Atlas's retry of the same callback claims with the same id.
	DeliveryID string
	// Results are the documents' outcomes.
	Results []Result
}

// Result is the outcome of one document.
type Result struct {
	// DocumentID is the document_id.
	DocumentID string
	// ErrorCode is Atlas's error_code for the document ("" for a result
	// with fields): the document is then failed, not received.
	ErrorCode string
}

// ClaimResult says which documents of a Claim were won.
type ClaimResult struct {
	// Won are the documents whose results the claim's delivery carries:
	// those that were pending, and those that this same DeliveryID had
	// claimed before (a retry). Only these are queued for the app.
	Won []string
	// Taken are the documents another delivery has claimed already: their
	// results are acknowledged to Atlas and not delivered again.
	Taken []string
	// Unknown are the documents the batch does not hold.
	Unknown []string
	// Batch is the batch after the claim.
	Batch *Batch
	// Claimed counts the documents of Won that this claim took from
	// pending (not those a retry of the same delivery won again): the
	// documents received through the claim's source.
	Claimed int
	// Completed is true when this claim received the batch's last
	// pending document: the claim completed the batch (Batch.Finished
	// is its completion).
	Completed bool
}

// ApplyClaim applies c to b at now and reports which documents it won;
// changed is false when it wrote nothing new (every won document was
// this delivery's already). A document is won if it is pending (it
// becomes received, or failed with the result's ErrorCode, with
// c.Source, now and c.DeliveryID) or if its DeliveryID is c.DeliveryID
// already (a retry: nothing changes). Any other document is Taken.
// A document listed twice in c counts once.
func (b *Batch) ApplyClaim(c Claim, now time.Time) (r ClaimResult, changed bool) {
	seen := make(map[string]bool, len(c.Results))
	for _, res := range c.Results {
		if seen[res.DocumentID] {
			continue
		}
		seen[res.DocumentID] = true
		i := b.doc(res.DocumentID)
		switch {
		case i < 0:
			r.Unknown = append(r.Unknown, res.DocumentID)
		case b.Documents[i].State == DocPending:
			d := &b.Documents[i]
			d.State, d.Source, d.At, d.DeliveryID, d.ErrorCode = DocReceived, c.Source, now, c.DeliveryID, res.ErrorCode
			if res.ErrorCode != "" {
				d.State = DocFailed
			}
			r.Won = append(r.Won, res.DocumentID)
			r.Claimed++
			changed = true
		case b.Documents[i].DeliveryID == c.DeliveryID:
			r.Won = append(r.Won, res.DocumentID)
		default:
			r.Taken = append(r.Taken, res.DocumentID)
		}
	}
	if changed {
		pending, _, _ := b.Counts()
		r.Completed = pending == 0 // Settle makes the batch complete
	}
	return r, changed
}

// CheckClaim checks the fields of a claim; the error wraps ErrInvalid.
func CheckClaim(c Claim) error {
	switch {
	case c.DeliveryID == "":
		return fmt.Errorf("%w: claim without a delivery id", ErrInvalid)
	case c.Source != SourceCallback && c.Source != SourcePoll:
		return fmt.Errorf("%w: claim source %q (want callback or poll)", ErrInvalid, c.Source)
	}
	return nil
}

// DocRef is where a document id is recorded: its batch, and its state
// there.
type DocRef struct {
	BatchID    string    `json:"batch_id"`
	Uploaded   time.Time `json:"uploaded"`
	State      DocState  `json:"state"`
	DeliveryID string    `json:"delivery_id,omitempty"`
}

// Due is a batch whose poll is due.
type Due struct {
	BatchID  string
	NextPoll time.Time
	// Cursor resumes Store.Due after this batch.
	Cursor string
}

// ListQuery selects a page of batches.
type ListQuery struct {
	State  State
	Limit  int
	Cursor string
}

// MaxListLimit is the largest page of List.
const MaxListLimit = 1000

// Page is a page of batches.
type Page struct {
	Batches []*Batch `json:"batches"`
	// Next is the cursor of the next page, "" after the last.
	Next string `json:"next,omitempty"`
}

// IdemOutcome is what Begin found for an Idempotency-Key.
type IdemOutcome uint8

// Outcomes of Begin.
const (
	// IdemNew: no record (or one past its window, or an in-flight one
	// past InFlightTimeout): the caller owns the key now and sends the
	// upload to Atlas, then calls Finish or Abandon.
	IdemNew IdemOutcome = iota + 1
	// IdemInFlight: the same key and body are in flight: 409.
	IdemInFlight
	// IdemDone: the same key and body were answered: the stored answer
	// is repeated without calling Atlas.
	IdemDone
	// IdemMismatch: the key was used with another body (in flight or
	// answered): 422.
	IdemMismatch
)

var idemNames = []string{IdemNew: "new", IdemInFlight: "in_flight", IdemDone: "done", IdemMismatch: "mismatch"}

// String returns "new", "in_flight", "done" or "mismatch".
func (o IdemOutcome) String() string {
	if int(o) < len(idemNames) && o > 0 {
		return idemNames[o]
	}
	return fmt.Sprintf("idem(%d)", uint8(o))
}

// IdemResult is the result of Begin.
type IdemResult struct {
	Outcome IdemOutcome
	// Token identifies the owner of an IdemNew key, for Finish and
	// Abandon.
	Token string
	// Answer is the stored answer of IdemDone.
	Answer Answer
	// Started is when the key's first request began.
	Started time.Time
}

// Answer is the answer an upload got, repeated to an idempotent repeat:
// the gateway's answer (status, content type, body) to the app, which
// carries ids and no field values or file URLs.
type Answer struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

// IdemRecord is the stored record of an Idempotency-Key. Stores keep it
// in this form; the rules are in BeginIdem.
type IdemRecord struct {
	Key     string    `json:"key"`
	Digest  string    `json:"digest"`
	Token   string    `json:"token"`
	Started time.Time `json:"started"`
	// Done is true once Finish stored Answer.
	Done   bool   `json:"done,omitempty"`
	Answer Answer `json:"answer,omitzero"`
	// Expires is Started + IdempotencyWindow: past it, the record is
	// ignored and purged.
	Expires time.Time `json:"expires"`
}

// BeginIdem decides Begin's outcome from the stored record (nil if none)
// at now: it returns the outcome and, for IdemNew, the record to store
// (with token).
func BeginIdem(rec *IdemRecord, key, digest, token string, now time.Time, p Policy) (IdemResult, *IdemRecord) {
	if rec != nil && now.Before(rec.Expires) && (rec.Done || now.Before(rec.Started.Add(p.InFlightTimeout))) {
		switch {
		case rec.Digest != digest:
			return IdemResult{Outcome: IdemMismatch, Started: rec.Started}, nil
		case rec.Done:
			return IdemResult{Outcome: IdemDone, Answer: rec.Answer, Started: rec.Started}, nil
		default:
			return IdemResult{Outcome: IdemInFlight, Started: rec.Started}, nil
		}
	}
	n := &IdemRecord{Key: key, Digest: digest, Token: token, Started: now, Expires: now.Add(p.IdempotencyWindow)}
	return IdemResult{Outcome: IdemNew, Token: token, Started: now}, n
}

// MaxKeyLen is the longest Idempotency-Key a Store takes.
const MaxKeyLen = 255

// CheckKey checks an Idempotency-Key; the error wraps ErrInvalid.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("%w: idempotency key must be 1 to %d bytes", ErrInvalid, MaxKeyLen)
	}
	return nil
}

// PurgeResult counts what Purge deleted.
type PurgeResult struct {
	Batches     int
	Idempotency int
}

// Stats are counts of a ledger.
type Stats struct {
	Processing int `json:"processing"`
	Complete   int `json:"complete"`
	Expired    int `json:"expired"`
	// Overdue counts the processing batches uploaded PollAfter ago or
	// more (see Batch.Overdue).
	Overdue     int `json:"overdue"`
	Idempotency int `json:"idempotency"`
}

// Policy holds the durations that drive a batch's life.
type Policy struct {
	// PollAfter is how long after the upload a batch with pending
	// documents is first polled, and reported overdue. Default 15m.
	PollAfter time.Duration
	// PollEvery is the time between two polls of a batch. Default 5m.
	PollEvery time.Duration
	// GiveUpAfter is how long after the upload a batch with documents
	// still pending expires. Default 72h.
	GiveUpAfter time.Duration
	// Retention is how long a finished batch is kept. Default 30 days.
	Retention time.Duration
	// IdempotencyWindow is how long an Idempotency-Key's record is kept
	// from its first request. Default 24h.
	IdempotencyWindow time.Duration
	// InFlightTimeout is how long an unfinished Idempotency-Key blocks
	// its repeats (409) before a repeat may take it over, its first
	// request presumed dead. Default 10m.
	InFlightTimeout time.Duration
}

// Defaults of Policy.
const (
	DefaultPollAfter         = 15 * time.Minute
	DefaultPollEvery         = 5 * time.Minute
	DefaultGiveUpAfter       = 72 * time.Hour
	DefaultRetention         = 30 * 24 * time.Hour
	DefaultIdempotencyWindow = 24 * time.Hour
	DefaultInFlightTimeout   = 10 * time.Minute
)

// WithDefaults returns p with its zero fields set to the defaults.
func (p Policy) WithDefaults() Policy {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&p.PollAfter, DefaultPollAfter)
	def(&p.PollEvery, DefaultPollEvery)
	def(&p.GiveUpAfter, DefaultGiveUpAfter)
	def(&p.Retention, DefaultRetention)
	def(&p.IdempotencyWindow, DefaultIdempotencyWindow)
	def(&p.InFlightTimeout, DefaultInFlightTimeout)
	return p
}

// Errors of a Store.
var (
	// ErrNotFound: no batch (or idempotency record) with that id.
	ErrNotFound = errors.New("ledger: not found")
	// ErrExists: Create of a batch id recorded already.
	ErrExists = errors.New("ledger: batch exists")
	// ErrInvalid is wrapped by the errors for unacceptable arguments.
	ErrInvalid = errors.New("ledger: invalid")
	// ErrLeaseHeld: another owner holds the batch's unexpired lease.
	ErrLeaseHeld = errors.New("ledger: lease held by another owner")
	// ErrNotDue: TakeLease of a batch that is finished (without a
	// lease) or not due yet.
	ErrNotDue = errors.New("ledger: batch not due")
	// ErrNotOwner: a lease or idempotency record that the caller no
	// longer holds.
	ErrNotOwner = errors.New("ledger: not the owner")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("ledger: closed")
	// ErrUnavailable is wrapped by the errors of storage that failed
	// (disk full, I/O error, the shared store unreachable); the error also
	// wraps the underlying one.
	ErrUnavailable = errors.New("ledger: storage unavailable")
)
