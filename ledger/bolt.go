package ledger

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the ledger's file in its directory.
const FileName = "ledger.db"

// Options configure a BoltStore.
type Options struct {
	// Policy drives the batches' life; zero fields take the defaults.
	Policy Policy
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// NoSync skips the fsync of each commit: for tests and benchmarks
	// only, as a crash then loses recorded batches.
	NoSync bool
	// LockTimeout is how long Open waits for another process to release
	// the file. Default 1s.
	LockTimeout time.Duration
}

// The buckets of the file. Every index key ends with the batch id, so
// that keys are unique; times are big-endian Unix nanoseconds, inverted
// (^) where newest must come first.
var (
	bktBatches   = []byte("batches")    // batch id -> JSON Batch
	bktDocs      = []byte("docs")       // uvarint len, document id, ^uploaded, batch id -> JSON docEntry
	bktDue       = []byte("due")        // next poll, batch id
	bktUploaded  = []byte("uploaded")   // ^uploaded, batch id (every batch)
	bktFinished  = []byte("finished")   // finished, batch id (complete and expired batches)
	bktIdem      = []byte("idem")       // key -> JSON IdemRecord
	bktIdemExp   = []byte("idemexp")    // expires, key
	bktProc      = []byte("processing") // ^uploaded, batch id
	bktComplete  = []byte("complete")   // ^uploaded, batch id
	bktExpired   = []byte("expired")    // ^uploaded, batch id
	allBuckets   = [][]byte{bktBatches, bktDocs, bktDue, bktUploaded, bktFinished, bktIdem, bktIdemExp, bktProc, bktComplete, bktExpired}
	stateBuckets = map[State][]byte{StateProcessing: bktProc, StateComplete: bktComplete, StateExpired: bktExpired}
)

// purgeChunk bounds the deletions of one Purge transaction.
const purgeChunk = 500

// BoltStore is the ledger in a bbolt file: each change a read-modify-
// write within a read-write transaction (so compare-and-set is
// trivially atomic), the changes that come in together committed and
// fsynced together (boltcommit.go), with every index a bucket keyed
// for range scans, so that no operation holds every batch in memory.
type BoltStore struct {
	core
	db *bolt.DB

	changes       chan *change  // to the committer (boltcommit.go)
	committerDone chan struct{} // closed when the committer returns

	watchMu  sync.Mutex
	watchers map[string]map[chan struct{}]struct{}
}

var _ Store = (*BoltStore)(nil)

// Open opens (creating if need be) the ledger file FileName in dir.
func Open(dir string, o Options) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = time.Second
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout, NoSync: o.NoSync, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("ledger: %s is open in another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: init %s: %w", path, err)
	}
	s := &BoltStore{db: db, watchers: map[string]map[chan struct{}]struct{}{}}
	s.init(o.Now, o.Policy)
	s.startCommitter()
	return s, nil
}

// ledgerErrors are the errors of ours, which leave a transaction as
// they are.
var ledgerErrors = []error{ErrNotFound, ErrExists, ErrInvalid, ErrLeaseHeld, ErrNotDue, ErrNotOwner, ErrClosed}

// wrap maps an error out of bbolt onto the Store's errors.
func wrap(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range ledgerErrors {
		if errors.Is(err, e) {
			return err
		}
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Keys.

func be64(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())) }

func inv64(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, ^uint64(t.UnixNano())) }

func timeKey(t time.Time, id string) []byte { return append(be64(t), id...) }

func invKey(t time.Time, id string) []byte { return append(inv64(t), id...) }

func docPrefix(docID string) []byte {
	p := binary.AppendUvarint(nil, uint64(len(docID)))
	return append(p, docID...)
}

func docKey(docID string, uploaded time.Time, batchID string) []byte {
	k := docPrefix(docID)
	k = append(k, inv64(uploaded)...)
	return append(k, batchID...)
}

// docEntry is the value of a docs index key: the document's state and
// delivery id. It is written as one byte of state followed by the
// delivery id; a ledger written before that holds JSON
// ({"s":"pending","d":"..."}), which is read as well.
type docEntry struct {
	State      DocState `json:"s"`
	DeliveryID string   `json:"d,omitempty"`
}

// docEntryBinary is the first byte of a docEntry in the binary form:
// never '{'.
const docEntryBinary = 0x01

func (e docEntry) encode() []byte {
	v := make([]byte, 0, 2+len(e.DeliveryID))
	return append(append(v, docEntryBinary, byte(e.State)), e.DeliveryID...)
}

func decodeDocEntry(v []byte) (docEntry, error) {
	if len(v) >= 2 && v[0] == docEntryBinary {
		return docEntry{State: DocState(v[1]), DeliveryID: string(v[2:])}, nil
	}
	var e docEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return docEntry{}, fmt.Errorf("ledger: document index entry: %w", err)
	}
	return e, nil
}

func encodeCursor(k []byte) string { return base64.RawURLEncoding.EncodeToString(k) }

func decodeCursor(c string) ([]byte, error) {
	k, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(k) < 8 {
		return nil, fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	return k, nil
}

// Records.

func getBatch(tx *bolt.Tx, id string) (*Batch, error) {
	v := tx.Bucket(bktBatches).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%w: batch %q", ErrNotFound, id)
	}
	b, err := decodeBoltBatch(v)
	if err != nil {
		return nil, fmt.Errorf("ledger: batch %q: %w", id, err)
	}
	return b, nil
}

// putBatch writes nb, whose previous state is old (nil for a new
// batch), and moves its index keys.
func putBatch(tx *bolt.Tx, old, nb *Batch) error {
	if err := tx.Bucket(bktBatches).Put([]byte(nb.ID), encodeBoltBatch(nb)); err != nil {
		return err
	}
	type idx struct {
		bkt []byte
		key func(*Batch) []byte // nil: no key
	}
	for _, x := range []idx{
		{bktUploaded, func(b *Batch) []byte { return invKey(b.Uploaded, b.ID) }},
		{bktDue, func(b *Batch) []byte {
			if b.NextPoll.IsZero() {
				return nil
			}
			return timeKey(b.NextPoll, b.ID)
		}},
		{bktFinished, func(b *Batch) []byte {
			if b.State == StateProcessing {
				return nil
			}
			return timeKey(b.Finished, b.ID)
		}},
		{bktProc, stateKey(StateProcessing)},
		{bktComplete, stateKey(StateComplete)},
		{bktExpired, stateKey(StateExpired)},
	} {
		var ok, nk []byte
		if old != nil {
			ok = x.key(old)
		}
		nk = x.key(nb)
		if bytes.Equal(ok, nk) {
			continue
		}
		bkt := tx.Bucket(x.bkt)
		if ok != nil {
			if err := bkt.Delete(ok); err != nil {
				return err
			}
		}
		if nk != nil {
			if err := bkt.Put(nk, nil); err != nil {
				return err
			}
		}
	}
	docs := tx.Bucket(bktDocs)
	for i, d := range nb.Documents {
		if old != nil && old.Uploaded.Equal(nb.Uploaded) && old.Documents[i].State == d.State && old.Documents[i].DeliveryID == d.DeliveryID {
			continue
		}
		if old != nil && !old.Uploaded.Equal(nb.Uploaded) {
			if err := docs.Delete(docKey(d.ID, old.Uploaded, nb.ID)); err != nil {
				return err
			}
		}
		v := docEntry{State: d.State, DeliveryID: d.DeliveryID}.encode()
		if err := docs.Put(docKey(d.ID, nb.Uploaded, nb.ID), v); err != nil {
			return err
		}
	}
	return nil
}

func stateKey(st State) func(*Batch) []byte {
	return func(b *Batch) []byte {
		if b.State != st {
			return nil
		}
		return invKey(b.Uploaded, b.ID)
	}
}

// deleteBatch removes b and its index keys.
func deleteBatch(tx *bolt.Tx, b *Batch) error {
	dels := []struct {
		bkt []byte
		key []byte
	}{
		{bktBatches, []byte(b.ID)},
		{bktUploaded, invKey(b.Uploaded, b.ID)},
		{bktFinished, timeKey(b.Finished, b.ID)},
	}
	if !b.NextPoll.IsZero() {
		dels = append(dels, struct{ bkt, key []byte }{bktDue, timeKey(b.NextPoll, b.ID)})
	}
	if sb := stateBuckets[b.State]; sb != nil {
		dels = append(dels, struct{ bkt, key []byte }{sb, invKey(b.Uploaded, b.ID)})
	}
	for _, d := range b.Documents {
		dels = append(dels, struct{ bkt, key []byte }{bktDocs, docKey(d.ID, b.Uploaded, b.ID)})
	}
	for _, d := range dels {
		if err := tx.Bucket(d.bkt).Delete(d.key); err != nil {
			return err
		}
	}
	return nil
}

// Create implements Store.
func (s *BoltStore) Create(ctx context.Context, in *Batch) (*Batch, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if in == nil || in.ID == "" {
		return nil, fmt.Errorf("%w: batch without an id", ErrInvalid)
	}
	if len(in.Documents) == 0 {
		return nil, fmt.Errorf("%w: batch %q without documents", ErrInvalid, in.ID)
	}
	now := s.clock()
	b := &Batch{ID: in.ID, ProductType: in.ProductType, Uploaded: in.Uploaded.Round(0), IdempotencyKey: in.IdempotencyKey, State: StateProcessing, Updated: now, Revision: 1}
	if b.Uploaded.IsZero() {
		b.Uploaded = now
	}
	seen := map[string]bool{}
	for _, d := range in.Documents {
		if d.ID == "" {
			return nil, fmt.Errorf("%w: batch %q: a document without an id", ErrInvalid, in.ID)
		}
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		b.Documents = append(b.Documents, Document{ID: d.ID, FileUUID: d.FileUUID, State: DocPending})
	}
	b.NextPoll = b.Uploaded.Add(s.Policy().PollAfter)
	b.Settle(now, s.Policy())
	err := s.write(func(tx *bolt.Tx) error {
		if tx.Bucket(bktBatches).Get([]byte(b.ID)) != nil {
			return fmt.Errorf("%w: %q", ErrExists, b.ID)
		}
		return abort(putBatch(tx, nil, b))
	})
	if err != nil {
		return nil, wrap(err)
	}
	return b.Clone(), nil
}

// Get implements Store.
func (s *BoltStore) Get(ctx context.Context, id string) (*Batch, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	var b *Batch
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		b, err = getBatch(tx, id)
		return err
	})
	return b, wrap(err)
}

// update runs fn on the batch in one read-write transaction; fn's error
// is returned unwrapped. It notifies the watchers after a commit that
// changed the batch.
func (s *BoltStore) update(ctx context.Context, id string, fn func(b *Batch, now time.Time) (bool, error)) (*Batch, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	var (
		out     *Batch
		fnErr   error
		changed bool
	)
	now := s.clock()
	err := s.write(func(tx *bolt.Tx) error {
		fnErr = nil
		old, err := getBatch(tx, id)
		if err != nil {
			return err
		}
		nb := old.Clone()
		changed, fnErr = fn(nb, now)
		if fnErr != nil {
			return fnErr
		}
		if !changed {
			out = old
			return nil
		}
		if nb.ID != old.ID || len(nb.Documents) != len(old.Documents) {
			return fmt.Errorf("%w: an update changed the batch's id or documents", ErrInvalid)
		}
		for i := range nb.Documents {
			if nb.Documents[i].ID != old.Documents[i].ID {
				return fmt.Errorf("%w: an update changed a document's id", ErrInvalid)
			}
		}
		nb.Settle(now, s.Policy())
		nb.Revision = old.Revision + 1
		nb.Updated = now
		out = nb
		return abort(putBatch(tx, old, nb))
	})
	if fnErr != nil {
		return nil, fnErr
	}
	if err != nil {
		return nil, wrap(err)
	}
	if changed {
		s.notify(id)
	}
	return out, nil
}

// Update implements Store. In bbolt the transaction is the
// compare-and-set: fn runs once, unless another change committed with
// it fails to write (see boltcommit.go).
func (s *BoltStore) Update(ctx context.Context, id string, fn func(*Batch) (bool, error)) (*Batch, error) {
	return s.update(ctx, id, func(b *Batch, _ time.Time) (bool, error) { return fn(b) })
}

// Claim implements Store.
func (s *BoltStore) Claim(ctx context.Context, id string, c Claim) (ClaimResult, error) {
	return claimWith(ctx, s.update, id, c)
}

// Lookup implements Store.
func (s *BoltStore) Lookup(ctx context.Context, docID string) ([]DocRef, error) {
	refs, err := s.LookupEach(ctx, []string{docID})
	if err != nil {
		return nil, err
	}
	return refs[0], nil
}

// LookupEach is Lookup of each document id, in one read transaction:
// refs[i] is where docIDs[i] is recorded.
func (s *BoltStore) LookupEach(ctx context.Context, docIDs []string) (refs [][]DocRef, _ error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	err := s.db.View(func(tx *bolt.Tx) error {
		refs = make([][]DocRef, len(docIDs))
		c := tx.Bucket(bktDocs).Cursor()
		for i, docID := range docIDs {
			var pending, other []DocRef
			p := docPrefix(docID)
			for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
				rest := k[len(p):]
				if len(rest) < 8 {
					continue
				}
				e, err := decodeDocEntry(v)
				if err != nil {
					return err
				}
				r := DocRef{
					BatchID:    string(rest[8:]),
					Uploaded:   time.Unix(0, int64(^binary.BigEndian.Uint64(rest[:8]))),
					State:      e.State,
					DeliveryID: e.DeliveryID,
				}
				if e.State == DocPending {
					pending = append(pending, r)
				} else {
					other = append(other, r)
				}
			}
			refs[i] = append(pending, other...)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	return refs, nil
}

// Due implements Store.
func (s *BoltStore) Due(ctx context.Context, limit int, cursor string) ([]Due, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	limit = max(limit, 1)
	var start []byte
	if cursor != "" {
		var err error
		if start, err = decodeCursor(cursor); err != nil {
			return nil, err
		}
	}
	now := s.clock()
	var out []Due
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktDue).Cursor()
		k, _ := seekAfter(c, start)
		for ; k != nil && len(out) < limit; k, _ = c.Next() {
			at := time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
			if at.After(now) {
				break
			}
			out = append(out, Due{BatchID: string(k[8:]), NextPoll: at, Cursor: encodeCursor(k)})
		}
		return nil
	})
	return out, wrap(err)
}

// seekAfter positions c on the first key after start (the first key if
// start is nil).
func seekAfter(c *bolt.Cursor, start []byte) ([]byte, []byte) {
	if start == nil {
		return c.First()
	}
	k, v := c.Seek(start)
	if k != nil && bytes.Equal(k, start) {
		return c.Next()
	}
	return k, v
}

// TakeLease implements Store.
func (s *BoltStore) TakeLease(ctx context.Context, id, owner string, ttl time.Duration) (*Batch, error) {
	return takeLeaseWith(ctx, s.update, id, owner, ttl)
}

// ReleaseLease implements Store.
func (s *BoltStore) ReleaseLease(ctx context.Context, id, owner string) (*Batch, error) {
	return releaseLeaseWith(ctx, s.update, id, owner, s.Policy)
}

// TakeLease applies Store.TakeLease's rules to b at now.
func TakeLease(b *Batch, owner string, ttl time.Duration, now time.Time) (bool, error) {
	switch {
	case b.State != StateProcessing && b.LeaseOwner == "":
		// A finished batch is taken only while a lease is left on it:
		// to repair what its poll may not have queued.
		return false, fmt.Errorf("%w: %q is %s", ErrNotDue, b.ID, b.State)
	case b.LeaseOwner != "" && b.LeaseOwner != owner && now.Before(b.LeaseUntil):
		return false, fmt.Errorf("%w: %q until %s", ErrLeaseHeld, b.ID, b.LeaseUntil.Format(time.RFC3339))
	case b.LeaseOwner != owner && b.NextPoll.After(now):
		return false, fmt.Errorf("%w: %q until %s", ErrNotDue, b.ID, b.NextPoll.Format(time.RFC3339))
	}
	// The batch is due again when the lease expires, should its owner
	// die; meanwhile Due does not list it.
	b.LeaseOwner, b.LeaseUntil = owner, now.Add(ttl)
	b.NextPoll = b.LeaseUntil
	return true, nil
}

// ReleaseLease applies Store.ReleaseLease's rules to b at now.
func ReleaseLease(b *Batch, owner string, now time.Time, p Policy) (bool, error) {
	if b.LeaseOwner != owner || owner == "" {
		if b.State != StateProcessing && owner != "" {
			// Finished, and the lease released already, or taken over
			// by a poll that repairs the batch: nothing of owner's.
			return false, nil
		}
		return false, fmt.Errorf("%w: lease of %q", ErrNotOwner, b.ID)
	}
	b.LeaseOwner, b.LeaseUntil = "", time.Time{}
	b.Polls++
	switch {
	case b.State != StateProcessing:
		b.NextPoll = time.Time{} // finished: due no more
	case !now.Before(b.Uploaded.Add(p.GiveUpAfter)):
		b.State, b.Finished = StateExpired, now
	default:
		b.NextPoll = now.Add(p.PollEvery)
	}
	return true, nil
}

// List implements Store.
func (s *BoltStore) List(ctx context.Context, q ListQuery) (Page, error) {
	if err := s.enter(ctx); err != nil {
		return Page{}, err
	}
	defer s.leave()
	limit := min(max(q.Limit, 1), MaxListLimit)
	bkt := bktUploaded
	var floor []byte // the first key of the range
	switch q.State {
	case StateAny:
	case StateProcessing, StateComplete, StateExpired:
		bkt = stateBuckets[q.State]
	case StateOverdue:
		bkt = bktProc
		floor = inv64(s.clock().Add(-s.Policy().PollAfter))
	default:
		return Page{}, fmt.Errorf("%w: batch state %d", ErrInvalid, q.State)
	}
	var start []byte
	if q.Cursor != "" {
		var err error
		if start, err = decodeCursor(q.Cursor); err != nil {
			return Page{}, err
		}
	}
	var (
		p    Page
		last []byte
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bkt).Cursor()
		var k []byte
		if floor != nil && (start == nil || bytes.Compare(start, floor) < 0) {
			k, _ = c.Seek(floor)
		} else {
			k, _ = seekAfter(c, start)
		}
		for ; k != nil; k, _ = c.Next() {
			if len(p.Batches) == limit {
				p.Next = encodeCursor(last)
				break
			}
			b, err := getBatch(tx, string(k[8:]))
			if err != nil {
				return err
			}
			p.Batches = append(p.Batches, b)
			last = slices.Clone(k)
		}
		return nil
	})
	return p, wrap(err)
}

// Watch implements Store.
func (s *BoltStore) Watch(ctx context.Context, id string) (<-chan struct{}, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bktBatches).Get([]byte(id)) == nil {
			return fmt.Errorf("%w: batch %q", ErrNotFound, id)
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	ch := make(chan struct{}, 1)
	s.watchMu.Lock()
	if s.watchers == nil { // closed
		s.watchMu.Unlock()
		close(ch)
		return ch, nil
	}
	m := s.watchers[id]
	if m == nil {
		m = map[chan struct{}]struct{}{}
		s.watchers[id] = m
	}
	m[ch] = struct{}{}
	s.watchMu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		if _, ok := s.watchers[id][ch]; ok {
			delete(s.watchers[id], ch)
			if len(s.watchers[id]) == 0 {
				delete(s.watchers, id)
			}
			close(ch)
		}
	}()
	return ch, nil
}

// notify signals the watchers of a batch.
func (s *BoltStore) notify(id string) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for ch := range s.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Begin implements Store.
func (s *BoltStore) Begin(ctx context.Context, key, digest string) (IdemResult, error) {
	if err := CheckKey(key); err != nil {
		return IdemResult{}, err
	}
	if err := s.enter(ctx); err != nil {
		return IdemResult{}, err
	}
	defer s.leave()
	var tok [16]byte
	rand.Read(tok[:])
	now := s.clock()
	var res IdemResult
	err := s.write(func(tx *bolt.Tx) error {
		old, err := getIdem(tx, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		var rec *IdemRecord
		res, rec = BeginIdem(old, key, digest, hex.EncodeToString(tok[:]), now, s.Policy())
		if rec == nil {
			return nil
		}
		return abort(putIdem(tx, old, rec))
	})
	return res, wrap(err)
}

func getIdem(tx *bolt.Tx, key string) (*IdemRecord, error) {
	v := tx.Bucket(bktIdem).Get([]byte(key))
	if v == nil {
		return nil, fmt.Errorf("%w: idempotency key", ErrNotFound)
	}
	r := new(IdemRecord)
	if err := json.Unmarshal(v, r); err != nil {
		return nil, fmt.Errorf("ledger: idempotency record: %w", err)
	}
	return r, nil
}

func putIdem(tx *bolt.Tx, old, r *IdemRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if old != nil && !old.Expires.Equal(r.Expires) {
		if err := tx.Bucket(bktIdemExp).Delete(timeKey(old.Expires, old.Key)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bktIdemExp).Put(timeKey(r.Expires, r.Key), nil); err != nil {
		return err
	}
	return tx.Bucket(bktIdem).Put([]byte(r.Key), v)
}

// ownIdem runs fn on key's record if token owns it and it is in flight.
func (s *BoltStore) ownIdem(ctx context.Context, key, token string, fn func(tx *bolt.Tx, r *IdemRecord) error) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	err := s.write(func(tx *bolt.Tx) error {
		r, err := getIdem(tx, key)
		if err != nil {
			return err
		}
		if r.Token != token || r.Done {
			return fmt.Errorf("%w: idempotency key", ErrNotOwner)
		}
		return abort(fn(tx, r))
	})
	return wrap(err)
}

// Finish implements Store.
func (s *BoltStore) Finish(ctx context.Context, key, token string, a Answer) error {
	return s.ownIdem(ctx, key, token, func(tx *bolt.Tx, r *IdemRecord) error {
		r.Done, r.Answer = true, a
		return putIdem(tx, r, r)
	})
}

// Abandon implements Store.
func (s *BoltStore) Abandon(ctx context.Context, key, token string) error {
	return s.ownIdem(ctx, key, token, func(tx *bolt.Tx, r *IdemRecord) error {
		if err := tx.Bucket(bktIdemExp).Delete(timeKey(r.Expires, r.Key)); err != nil {
			return err
		}
		return tx.Bucket(bktIdem).Delete([]byte(key))
	})
}

// Purge implements Store.
func (s *BoltStore) Purge(ctx context.Context) (PurgeResult, error) {
	if err := s.enter(ctx); err != nil {
		return PurgeResult{}, err
	}
	defer s.leave()
	now := s.clock()
	var res PurgeResult
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		var ids []string
		n := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			ids = ids[:0]
			n = 0
			cutoff := now.Add(-s.Policy().Retention)
			c := tx.Bucket(bktFinished).Cursor()
			var keys [][]byte
			for k, _ := c.First(); k != nil && len(keys) < purgeChunk; k, _ = c.Next() {
				if time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).After(cutoff) {
					break
				}
				keys = append(keys, slices.Clone(k))
			}
			for _, k := range keys {
				id := string(k[8:])
				b, err := getBatch(tx, id)
				if errors.Is(err, ErrNotFound) { // a stray index key
					if err := tx.Bucket(bktFinished).Delete(k); err != nil {
						return err
					}
					continue
				}
				if err != nil {
					return err
				}
				if err := deleteBatch(tx, b); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return res, wrap(err)
		}
		res.Batches += len(ids)
		for _, id := range ids {
			s.notify(id)
		}
		if n < purgeChunk {
			break
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n := 0
		err := s.db.Update(func(tx *bolt.Tx) error {
			n = 0
			c := tx.Bucket(bktIdemExp).Cursor()
			var keys [][]byte
			for k, _ := c.First(); k != nil && len(keys) < purgeChunk; k, _ = c.Next() {
				if time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).After(now) {
					break
				}
				keys = append(keys, slices.Clone(k))
			}
			for _, k := range keys {
				if err := tx.Bucket(bktIdemExp).Delete(k); err != nil {
					return err
				}
				if err := tx.Bucket(bktIdem).Delete(k[8:]); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return res, wrap(err)
		}
		res.Idempotency += n
		if n < purgeChunk {
			break
		}
	}
	return res, nil
}

// Stats implements Store. It counts index keys: time in proportion to
// the number of batches, memory constant.
func (s *BoltStore) Stats(ctx context.Context) (Stats, error) {
	if err := s.enter(ctx); err != nil {
		return Stats{}, err
	}
	defer s.leave()
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		st.Processing = tx.Bucket(bktProc).Stats().KeyN
		// The processing index is ordered newest first: the overdue
		// batches are the keys from the cutoff on.
		c := tx.Bucket(bktProc).Cursor()
		for k, _ := c.Seek(inv64(s.clock().Add(-s.Policy().PollAfter))); k != nil; k, _ = c.Next() {
			st.Overdue++
		}
		st.Complete = tx.Bucket(bktComplete).Stats().KeyN
		st.Expired = tx.Bucket(bktExpired).Stats().KeyN
		st.Idempotency = tx.Bucket(bktIdem).Stats().KeyN
		return nil
	})
	return st, wrap(err)
}

// Close implements Store: it waits for the operations in progress,
// closes the file and the Watch channels.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	// No change is in flight (each holds the read lock until answered).
	close(s.changes)
	<-s.committerDone
	s.watchMu.Lock()
	for id, m := range s.watchers {
		for ch := range m {
			close(ch)
		}
		delete(s.watchers, id)
	}
	s.watchers = nil
	s.watchMu.Unlock()
	return s.db.Close()
}
