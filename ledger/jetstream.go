package ledger

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of JetStreamOptions.
const (
	DefaultBucket       = "ATLAS_LEDGER"
	DefaultReplicas     = 3
	DefaultMaxClockSkew = 30 * time.Second
	DefaultOrphanGrace  = 10 * time.Minute
)

// markerTTL is how long the delete marker of a removed key stays in the
// bucket (a per-message TTL): long enough for every watcher to see it.
const markerTTL = time.Minute

// JetStreamOptions configure a JetStreamStore.
type JetStreamOptions struct {
	// Policy drives the batches' life; zero fields take the defaults.
	Policy Policy
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Bucket is the key-value bucket (stream KV_<Bucket>): letters,
	// digits, '-' and '_'. Default ATLAS_LEDGER.
	Bucket string
	// Replicas is the number of servers holding the bucket: 3 for a
	// cluster, 1 for a single server. Default 3.
	Replicas int
	// MaxClockSkew is how far apart the instances' clocks may be.
	// Default 30s.
	MaxClockSkew time.Duration
	// OrphanGrace is how long an index key written by a Create that has
	// not (yet) recorded its batch is left alone: longer than any Create
	// takes plus MaxClockSkew. Default 10m.
	OrphanGrace time.Duration
}

var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// JetStreamStore is the ledger in a JetStream key-value bucket, shared by
// every instance connected to the same servers. See the package
// documentation ("JetStream layout") for its keys and the argument for
// their consistency.
type JetStreamStore struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
	pre    string // $KV.<bucket>.
	skew   time.Duration
	grace  time.Duration

	core
	watchMu  sync.Mutex
	watchers map[string]map[chan struct{}]struct{} // nil once closed
	seen     map[string]uint64                     // batch id -> the latest revision signalled
	watcher  jetstream.KeyWatcher
}

var _ Store = (*JetStreamStore)(nil)

// OpenJetStream opens the ledger in the bucket o.Bucket of js, creating
// it if need be (its stream KV_<Bucket>, without direct gets so that
// every read is answered by the stream's leader, and with per-message
// TTLs for the delete markers). An existing bucket with other replicas,
// or not made by OpenJetStream, is an error that names the difference.
// js is the caller's: Close does not close its connection, so that the
// queue and the ledger may share one.
func OpenJetStream(ctx context.Context, js jetstream.JetStream, o JetStreamOptions) (*JetStreamStore, error) {
	if o.Replicas < 0 || o.MaxClockSkew < 0 || o.OrphanGrace < 0 {
		return nil, errors.New("ledger: negative value in the JetStream options")
	}
	bucket := cmp.Or(o.Bucket, DefaultBucket)
	if !bucketName.MatchString(bucket) {
		return nil, fmt.Errorf("ledger: bucket name %q: want letters, digits, '-' and '_'", bucket)
	}
	replicas := cmp.Or(o.Replicas, DefaultReplicas)
	if replicas > 5 {
		return nil, fmt.Errorf("ledger: replicas %d: JetStream allows 1 to 5", replicas)
	}
	want := jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Description:       "caddy-atlas: the ledger of batches and idempotency records",
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 2, // see listKeys
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		AllowDirect:       false,
		AllowMsgTTL:       true,
	}
	st, err := setupStream(ctx, js, want)
	if err != nil {
		return nil, fmt.Errorf("%w: ledger bucket %s (replicas %d): %w", ErrUnavailable, bucket, replicas, err)
	}
	got := st.CachedInfo().Config
	switch {
	case got.Replicas != replicas:
		return nil, fmt.Errorf("ledger: bucket %s has %d replicas, the configuration says %d: set replicas %d, or move the bucket (nats stream edit KV_%s --replicas)",
			bucket, got.Replicas, replicas, got.Replicas, bucket)
	case got.MaxMsgsPerSubject != 2 || !got.AllowRollup || !got.AllowMsgTTL || got.AllowDirect:
		return nil, fmt.Errorf("ledger: bucket %s was not made by caddy-atlas (history 2, rollup, message TTLs, no direct get): use another bucket name", bucket)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("%w: ledger bucket %s: %w", ErrUnavailable, bucket, err)
	}
	if err := waitReady(ctx, kv); err != nil {
		return nil, fmt.Errorf("%w: ledger bucket %s (replicas %d) does not answer: %w", ErrUnavailable, bucket, replicas, err)
	}
	s := &JetStreamStore{
		kv:       kv,
		stream:   st,
		pre:      "$KV." + bucket + ".",
		skew:     cmp.Or(o.MaxClockSkew, DefaultMaxClockSkew),
		grace:    cmp.Or(o.OrphanGrace, DefaultOrphanGrace),
		watchers: map[string]map[chan struct{}]struct{}{},
		seen:     map[string]uint64{},
	}
	s.init(o.Now, o.Policy)
	return s, nil
}

// readyWait bounds how long OpenJetStream waits for its bucket to
// answer.
const readyWait = 15 * time.Second

// waitReady returns once the bucket's stream answers a read (a missing
// key's "not found"): a bucket just created, or one whose leader is being
// elected, has no leader for a moment, and a write would get no answer.
// It tries again, a second at most each, until ctx ends or readyWait.
func waitReady(ctx context.Context, kv jetstream.KeyValue) error {
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	for attempt := 1; ; attempt++ {
		tctx, tcancel := context.WithTimeout(ctx, time.Second)
		_, err := kv.Get(tctx, "ready-probe")
		tcancel()
		var ae *jetstream.APIError
		switch {
		case err == nil, errors.Is(err, jetstream.ErrKeyNotFound):
			return nil
		case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
			errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
			errors.As(err, &ae) && ae.Code == 503:
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(min(25*time.Millisecond<<min(attempt, 5), 500*time.Millisecond)):
		}
	}
}

// JetStream API error codes (nats-server's jetstream_errors_generated.go)
// of a stream the servers can never hold as configured.
const (
	jsClusterNotActive           jetstream.ErrorCode = 10006
	jsInsufficientResources      jetstream.ErrorCode = 10023
	jsStreamReplicasNotSupported jetstream.ErrorCode = 10074
)

// setupStream finds or creates the bucket's stream, trying again while
// the servers cannot place it yet (a cluster just formed, a peer
// restarting), until ctx is done; what can never work fails at once.
func setupStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	for {
		st, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			st, err = js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				st, err = js.Stream(ctx, want.Name)
			}
		}
		if err == nil {
			return st, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			switch apiErr.ErrorCode {
			case jsClusterNotActive, jsStreamReplicasNotSupported:
				return nil, fmt.Errorf("replicas %d needs a cluster of as many JetStream servers; these are not clustered: set replicas 1 (%w)", want.Replicas, err)
			case jsInsufficientResources:
				return nil, fmt.Errorf("the servers lack the resources for replicas %d: %w", want.Replicas, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// fail maps an error of the servers onto the Store's errors.
func (s *JetStreamStore) fail(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	for _, e := range ledgerErrors {
		if errors.Is(err, e) {
			return err
		}
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Keys. See the package documentation.

// esc makes an id one token of a key: itself if it is made of letters,
// digits, '-' and '_', else '=' and its base64url encoding (a plain
// token never starts with '=').
func esc(id string) string {
	plain := id != ""
	for i := 0; i < len(id) && plain; i++ {
		c := id[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if plain {
		return id
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

func unesc(tok string) (string, error) {
	if b64, ok := strings.CutPrefix(tok, "="); ok {
		b, err := base64.RawURLEncoding.DecodeString(b64)
		return string(b), err
	}
	return tok, nil
}

// ord is t as a 16-hex-digit token that sorts as t does.
func ord(t time.Time) uint64 { return uint64(t.UnixNano()) ^ 1<<63 }

func ordTime(o uint64) time.Time { return time.Unix(0, int64(o^1<<63)) }

func hex16(v uint64) string { return fmt.Sprintf("%016x", v) }

// Index kinds: the time-bucketed indexes, each with its range key.
type ixKind struct {
	name   string        // range key r.<name>; key prefix
	prefix string        // key prefix before the bucket
	width  time.Duration // bucket width
}

var (
	kindDue  = &ixKind{"due", "due", time.Minute}
	kindList = &ixKind{"list", "l.all", time.Hour}
	kindFin  = &ixKind{"fin", "f", time.Minute}
	kindExp  = &ixKind{"exp", "x", time.Minute}
)

func (k *ixKind) bucket(t time.Time) int64 {
	n, w := t.UnixNano(), k.width.Nanoseconds()
	b := n / w
	if n%w < 0 {
		b--
	}
	return b
}

// raiseLimit is the highest bucket a scanner at now may raise the
// range's floor to.
func (s *JetStreamStore) raiseLimit(k *ixKind, now time.Time) int64 {
	switch k {
	case kindFin, kindList:
		return k.bucket(now.Add(-s.Policy().Retention))
	default:
		return k.bucket(now)
	}
}

// ikey is an index key, with its kind and bucket if time-bucketed.
type ikey struct {
	key    string
	kind   *ixKind
	bucket int64
}

func bucketed(k *ixKind, prefix string, t time.Time, o uint64, id string) ikey {
	b := k.bucket(t)
	return ikey{key: prefix + "." + strconv.FormatInt(b, 10) + "." + hex16(o) + "." + esc(id), kind: k, bucket: b}
}

func batchKey(id string) string { return "b." + esc(id) }

func idemKey(key string) string { return "i." + esc(key) }

var listPrefix = map[State]string{StateAny: "l.all", StateProcessing: "l.processing", StateComplete: "l.complete", StateExpired: "l.expired"}

// batchKeys returns the index keys that b's state needs.
func batchKeys(b *Batch) []ikey {
	var ks []ikey
	for _, d := range b.Documents {
		ks = append(ks, ikey{key: "d." + esc(d.ID) + "." + esc(b.ID)})
	}
	inv := ^ord(b.Uploaded)
	ks = append(ks, bucketed(kindList, "l.all", b.Uploaded, inv, b.ID))
	if p := listPrefix[b.State]; p != "" && b.State != StateAny {
		k := bucketed(kindList, p, b.Uploaded, inv, b.ID)
		k.kind = nil // in the bucket of its l.all key, which the range covers
		ks = append(ks, k)
	}
	if !b.NextPoll.IsZero() {
		ks = append(ks, bucketed(kindDue, "due", b.NextPoll, ord(b.NextPoll), b.ID))
	}
	if b.State != StateProcessing {
		ks = append(ks, bucketed(kindFin, "f", b.Finished, ord(b.Finished), b.ID))
	}
	return ks
}

func idemKeys(r *IdemRecord) []ikey {
	return []ikey{bucketed(kindExp, "x", r.Expires, ord(r.Expires), r.Key)}
}

func keySet(ks []ikey) map[string]bool {
	m := make(map[string]bool, len(ks))
	for _, k := range ks {
		m[k.key] = true
	}
	return m
}

// ixValue is the value of an index key: the revision of the record the
// writer read (0 for a Create), and the writer's clock.
type ixValue struct {
	Base    uint64 `json:"r"`
	Written int64  `json:"w"`
}

// owner is the state of the record (batch or idempotency record) an
// index key belongs to, as read: the keys it needs and its revision; if
// missing, rev is its delete marker's revision (0 if none is left).
type owner struct {
	keys    map[string]bool
	rev     uint64
	missing bool
}

// errConflict: the record changed between the read and the
// compare-and-set.
var errConflict = errors.New("ledger: revision conflict")

// commit writes one change of a record at key pk, whose revision was
// base (0: create it) and whose index keys go from old to nw: first the
// index keys it gains (each stamped with base), then the ranges of their
// kinds, then the record by compare-and-set, then, once that succeeded,
// the removal of the keys it lost. written collects the keys put, with
// their revisions, for the clean-up of a lost race.
func (s *JetStreamStore) commit(ctx context.Context, pk string, base uint64, old, nw []ikey, val []byte, written map[string]uint64) (uint64, error) {
	had := keySet(old)
	v, _ := json.Marshal(ixValue{Base: base, Written: s.clock().UnixNano()})
	span := map[*ixKind][2]int64{}
	for _, k := range nw {
		if had[k.key] {
			continue
		}
		rev, err := s.kv.Put(ctx, k.key, v)
		if err != nil {
			return 0, err
		}
		written[k.key] = rev
		if k.kind != nil {
			sp, ok := span[k.kind]
			if !ok {
				sp = [2]int64{k.bucket, k.bucket}
			}
			span[k.kind] = [2]int64{min(sp[0], k.bucket), max(sp[1], k.bucket)}
		}
	}
	for kind, sp := range span {
		if err := s.ensureRange(ctx, kind, sp[0], sp[1]); err != nil {
			return 0, err
		}
	}
	var (
		rev uint64
		err error
	)
	if base == 0 {
		rev, err = s.kv.Create(ctx, pk, val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, errConflict
		}
	} else {
		rev, err = s.kv.Update(ctx, pk, val, base)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, errConflict
		}
	}
	if err != nil {
		return 0, err
	}
	o := owner{keys: keySet(nw), rev: rev}
	for _, k := range old {
		if !o.keys[k.key] {
			s.drop(ctx, k.key, o)
		}
	}
	return rev, nil
}

// drop removes the index key if it is stale for o, the state of its
// record: see the package documentation for the rule. The removal is a
// compare-and-set on the key's revision, so a key written again since it
// was read stays. Errors are ignored: a key left is removed later.
func (s *JetStreamStore) drop(ctx context.Context, key string, o owner) {
	if o.keys[key] {
		return
	}
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return
	}
	var v ixValue
	if json.Unmarshal(e.Value(), &v) != nil {
		v = ixValue{Base: 1} // not ours to keep
	}
	switch {
	case !o.missing:
		if o.rev <= v.Base {
			return // a writer that read the current revision may still commit
		}
	case o.rev > 0 && (e.Revision() < o.rev || v.Base != 0 && v.Base < o.rev):
	case v.Base != 0:
	case s.clock().Sub(time.Unix(0, v.Written)) <= s.grace:
		return // perhaps a Create in progress
	}
	_ = s.kv.Purge(ctx, key, jetstream.LastRevision(e.Revision()), jetstream.PurgeTTL(markerTTL))
}

// tidy removes what the failed attempts of a change wrote and the final
// state (o, nil if the change failed: then read afresh, by load) does
// not need.
func (s *JetStreamStore) tidy(written map[string]uint64, o *owner, load func(context.Context) owner) {
	if len(written) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if o == nil {
		oo := load(ctx)
		o = &oo
	}
	for k := range written {
		s.drop(ctx, k, *o)
	}
}

// Ranges: r.<kind> holds the lowest and highest bucket that may hold
// keys of the kind.
type ixRange struct {
	Lo int64 `json:"lo"`
	Hi int64 `json:"hi"`
}

func (s *JetStreamStore) getRange(ctx context.Context, k *ixKind) (ixRange, uint64, error) {
	e, err := s.kv.Get(ctx, "r."+k.name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return ixRange{}, 0, nil
	}
	if err != nil {
		return ixRange{}, 0, err
	}
	var r ixRange
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return ixRange{}, 0, fmt.Errorf("ledger: range of %s: %w", k.name, err)
	}
	return r, e.Revision(), nil
}

// ensureRange widens the range of kind to [lo, hi], after the keys in it
// were put; if lo is within reach of a scanner's raise, it rewrites the
// range even when it covers lo, so that a scanner that read the range
// before the put fails its raise.
func (s *JetStreamStore) ensureRange(ctx context.Context, k *ixKind, lo, hi int64) error {
	for {
		r, rev, err := s.getRange(ctx, k)
		if err != nil {
			return err
		}
		if rev == 0 {
			v, _ := json.Marshal(ixRange{Lo: lo, Hi: hi})
			if _, err := s.kv.Create(ctx, "r."+k.name, v); errors.Is(err, jetstream.ErrKeyExists) {
				continue
			} else if err != nil {
				return err
			}
			return nil
		}
		touch := lo <= s.raiseLimit(k, s.clock().Add(s.skew))+1
		if lo >= r.Lo && hi <= r.Hi && !touch {
			return nil
		}
		r.Lo, r.Hi = min(r.Lo, lo), max(r.Hi, hi)
		v, _ := json.Marshal(r)
		if _, err := s.kv.Update(ctx, "r."+k.name, v, rev); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		} else if err != nil {
			return err
		}
		return nil
	}
}

// raise moves the floor of kind's range, read at rev, up to the first
// bucket up to limit that holds a key; a range changed since fails the
// compare-and-set, and stays.
func (s *JetStreamStore) raise(ctx context.Context, k *ixKind, r ixRange, rev uint64, limit int64) {
	if rev == 0 || r.Lo >= limit {
		return
	}
	lo := r.Lo
	for lo < limit {
		end := min(lo+scanChunk-1, limit-1)
		first := int64(-1)
		found := false
		err := s.listBuckets(ctx, k.prefix, lo, end, func(b int64, _ string) bool {
			if !found || b < first {
				first = b
			}
			found = true
			return true
		})
		if err != nil {
			return
		}
		if found {
			lo = first
			break
		}
		lo = end + 1
	}
	if lo <= r.Lo {
		return
	}
	r.Lo = lo
	v, _ := json.Marshal(r)
	_, _ = s.kv.Update(ctx, "r."+k.name, v, rev)
}

// scanChunk is the number of buckets listed by one consumer.
const scanChunk = 60

// listBuckets lists the keys prefix.<b>.<x>.<y> for the buckets b in
// [from, to], calling fn with the bucket and "<x>.<y>"; fn returns false
// to stop.
func (s *JetStreamStore) listBuckets(ctx context.Context, prefix string, from, to int64, fn func(b int64, rest string) bool) error {
	if from > to {
		return nil
	}
	var filters []string
	for b := from; b <= to; b++ {
		filters = append(filters, prefix+"."+strconv.FormatInt(b, 10)+".*.*")
	}
	return s.listKeys(ctx, filters, func(key string) bool {
		rest := strings.TrimPrefix(key, prefix+".")
		bs, rest, ok := strings.Cut(rest, ".")
		b, err := strconv.ParseInt(bs, 10, 64)
		if !ok || err != nil {
			return true
		}
		return fn(b, rest)
	})
}

// listKeys lists the keys matching filters (the current ones, not the
// deleted), calling fn for each until it returns false. It reads them
// with an ephemeral pull consumer, headers only, last per subject: the
// servers find the subjects in their subject index and send those
// entries, and nothing more. (This is why the bucket keeps 2 revisions
// per key: with 1, nats-server takes last-per-subject for deliver-all
// and walks the whole stream for the filter, a cost that grows with the
// batches kept. A push watcher would also go on scanning the rest of the
// stream for new entries until stopped.)
func (s *JetStreamStore) listKeys(ctx context.Context, filters []string, fn func(key string) bool) error {
	subjects := make([]string, len(filters))
	for i, f := range filters {
		subjects[i] = s.pre + f
	}
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if len(subjects) == 1 {
		cfg.FilterSubject = subjects[0]
	} else {
		cfg.FilterSubjects = subjects
	}
	cons, err := s.stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := s.fetch(ctx, cons, int(min(pending, 1000)))
		if err != nil {
			return err
		}
		n := 0
		stop := false
		for _, m := range batch {
			n++
			if stop {
				continue
			}
			if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" || m.Headers().Get(jetstream.MarkerReasonHeader) != "" {
				continue
			}
			if !fn(strings.TrimPrefix(m.Subject(), s.pre)) {
				stop = true
			}
		}
		if stop || n == 0 {
			return nil
		}
		pending -= uint64(min(uint64(n), pending))
	}
	return ctx.Err()
}

// fetch reads up to n available messages of cons. In a cluster, the
// consumer just created may not be reachable from every server yet
// ("no responders"): it tries again for up to a second.
func (s *JetStreamStore) fetch(ctx context.Context, cons jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	for attempt := 0; ; attempt++ {
		batch, err := cons.FetchNoWait(n)
		var msgs []jetstream.Msg
		if err == nil {
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
			err = batch.Error()
		}
		if err == nil || !errors.Is(err, nats.ErrNoResponders) || attempt >= 50 || len(msgs) > 0 {
			return msgs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cand is an entry of a time index: its order, its record's id, its key.
type cand struct {
	ord uint64
	id  string
	key string
}

func (c cand) less(o uint64, id string) bool { return c.ord < o || c.ord == o && c.id < id }

// topK keeps the n smallest candidates.
type topK struct {
	n int
	c []cand
}

func (t *topK) add(c cand) {
	i, _ := slices.BinarySearchFunc(t.c, c, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.ord, b.ord), strings.Compare(a.id, b.id))
	})
	if i >= t.n {
		return
	}
	if i < len(t.c) && t.c[i].ord == c.ord && t.c[i].id == c.id {
		return
	}
	t.c = slices.Insert(t.c, i, c)
	if len(t.c) > t.n {
		t.c = t.c[:t.n]
	}
}

// parseRest parses "<hex16>.<escaped id>".
func parseRest(rest string) (uint64, string, bool) {
	hs, eid, ok := strings.Cut(rest, ".")
	if !ok || len(hs) != 16 {
		return 0, "", false
	}
	o, err := strconv.ParseUint(hs, 16, 64)
	if err != nil {
		return 0, "", false
	}
	id, err := unesc(eid)
	if err != nil {
		return 0, "", false
	}
	return o, id, true
}

// Cursors: base64url of "<hex16><id>".

func jsCursor(o uint64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(hex16(o) + id))
}

func parseJSCursor(c string) (uint64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 16 {
		return 0, "", fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	o, err := strconv.ParseUint(string(b[:16]), 16, 64)
	if err != nil {
		return 0, "", fmt.Errorf("%w: bad cursor", ErrInvalid)
	}
	return o, string(b[16:]), nil
}

// Records.

// loadEntry reads the record at key of the bucket, what naming it in
// errors: its revision, or ErrNotFound (with its delete marker's
// revision, if one is left).
func loadEntry[T any](ctx context.Context, kv jetstream.KeyValue, key, what string) (*T, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyDeleted) && e != nil {
		return nil, e.Revision(), fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	if err != nil {
		return nil, 0, err
	}
	v := new(T)
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return nil, 0, fmt.Errorf("ledger: %s: %w", what, err)
	}
	return v, e.Revision(), nil
}

// ownerAt is the state for drop of a record that loadEntry read as v,
// rev and err, whose index keys are keys(v); false if it could not be
// read.
func ownerAt[T any](v *T, rev uint64, err error, keys func(*T) []ikey) (owner, bool) {
	switch {
	case err == nil:
		return owner{keys: keySet(keys(v)), rev: rev}, true
	case errors.Is(err, ErrNotFound):
		return owner{rev: rev, missing: true}, true
	}
	return owner{}, false
}

// loadBatch reads a batch: its revision, or ErrNotFound (with its
// delete marker's revision, if one is left).
func (s *JetStreamStore) loadBatch(ctx context.Context, id string) (*Batch, uint64, error) {
	b, rev, err := loadEntry[Batch](ctx, s.kv, batchKey(id), fmt.Sprintf("batch %q", id))
	if b != nil {
		b.Revision = rev
	}
	return b, rev, err
}

// batchOwner reads the state of batch id for drop.
func (s *JetStreamStore) batchOwner(ctx context.Context, id string) (owner, bool) {
	b, rev, err := s.loadBatch(ctx, id)
	return ownerAt(b, rev, err, batchKeys)
}

func ownerOf(b *Batch) owner { return owner{keys: keySet(batchKeys(b)), rev: b.Revision} }

func encodeBatch(b *Batch) ([]byte, error) {
	c := *b
	c.Revision = 0 // the entry's revision is the record's
	return json.Marshal(&c)
}

// Create implements Store.
func (s *JetStreamStore) Create(ctx context.Context, in *Batch) (*Batch, error) {
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
	b := &Batch{ID: in.ID, ProductType: in.ProductType, Uploaded: in.Uploaded.Round(0), IdempotencyKey: in.IdempotencyKey, State: StateProcessing, Updated: now}
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
	val, err := encodeBatch(b)
	if err != nil {
		return nil, err
	}
	written := map[string]uint64{}
	rev, err := s.commit(ctx, batchKey(b.ID), 0, nil, batchKeys(b), val, written)
	if err != nil {
		s.tidy(written, nil, func(ctx context.Context) owner {
			o, ok := s.batchOwner(ctx, b.ID)
			if !ok {
				return owner{keys: keySet(batchKeys(b)), rev: 0} // keep them
			}
			return o
		})
		if errors.Is(err, errConflict) {
			return nil, fmt.Errorf("%w: %q", ErrExists, b.ID)
		}
		return nil, s.fail(ctx, err)
	}
	b.Revision = rev
	s.notify(b.ID, rev)
	return b.Clone(), nil
}

// Get implements Store.
func (s *JetStreamStore) Get(ctx context.Context, id string) (*Batch, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	b, _, err := s.loadBatch(ctx, id)
	return b, s.fail(ctx, err)
}

// update runs fn on the batch and writes the result by compare-and-set
// on the entry's revision, again on the new state while another write
// wins the race.
func (s *JetStreamStore) update(ctx context.Context, id string, fn func(b *Batch, now time.Time) (bool, error)) (out *Batch, err error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	written := map[string]uint64{}
	defer func() {
		var o *owner
		if err == nil && out != nil {
			oo := ownerOf(out)
			o = &oo
		}
		s.tidy(written, o, func(ctx context.Context) owner {
			o, ok := s.batchOwner(ctx, id)
			if !ok {
				return owner{keys: map[string]bool{}, rev: 0, missing: false} // keep them
			}
			return o
		})
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		now := s.clock()
		old, rev, err := s.loadBatch(ctx, id)
		if err != nil {
			return nil, s.fail(ctx, err)
		}
		nb := old.Clone()
		changed, fnErr := fn(nb, now)
		if fnErr != nil {
			return nil, fnErr
		}
		if !changed {
			return old, nil
		}
		if nb.ID != old.ID || len(nb.Documents) != len(old.Documents) {
			return nil, fmt.Errorf("%w: an update changed the batch's id or documents", ErrInvalid)
		}
		for i := range nb.Documents {
			if nb.Documents[i].ID != old.Documents[i].ID {
				return nil, fmt.Errorf("%w: an update changed a document's id", ErrInvalid)
			}
		}
		nb.Settle(now, s.Policy())
		nb.Updated = now
		val, err := encodeBatch(nb)
		if err != nil {
			return nil, err
		}
		nrev, err := s.commit(ctx, batchKey(id), rev, batchKeys(old), batchKeys(nb), val, written)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return nil, s.fail(ctx, err)
		}
		nb.Revision = nrev
		s.notify(id, nrev)
		return nb, nil
	}
}

// Update implements Store: fn may run several times (compare-and-set).
func (s *JetStreamStore) Update(ctx context.Context, id string, fn func(*Batch) (bool, error)) (*Batch, error) {
	return s.update(ctx, id, func(b *Batch, _ time.Time) (bool, error) { return fn(b) })
}

// Claim implements Store.
func (s *JetStreamStore) Claim(ctx context.Context, id string, c Claim) (ClaimResult, error) {
	return claimWith(ctx, s.update, id, c)
}

// TakeLease implements Store.
func (s *JetStreamStore) TakeLease(ctx context.Context, id, owner string, ttl time.Duration) (*Batch, error) {
	return takeLeaseWith(ctx, s.update, id, owner, ttl)
}

// ReleaseLease implements Store.
func (s *JetStreamStore) ReleaseLease(ctx context.Context, id, owner string) (*Batch, error) {
	return releaseLeaseWith(ctx, s.update, id, owner, s.Policy)
}

// verify reads the batches of cands, at most 16 at a time, and returns
// them in order (nil where the entry is stale for keep, which then drops
// the key).
func (s *JetStreamStore) verify(ctx context.Context, cands []cand, keep func(c cand, b *Batch) bool) ([]*Batch, error) {
	out := make([]*Batch, len(cands))
	errs := make([]error, len(cands))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, c := range cands {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			b, rev, err := s.loadBatch(ctx, c.id)
			switch {
			case errors.Is(err, ErrNotFound):
				s.drop(ctx, c.key, owner{rev: rev, missing: true})
			case err != nil:
				errs[i] = err
			case keep(c, b):
				out[i] = b
			default:
				s.drop(ctx, c.key, ownerOf(b))
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Lookup implements Store.
func (s *JetStreamStore) Lookup(ctx context.Context, docID string) ([]DocRef, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	prefix := "d." + esc(docID) + "."
	var cands []cand
	err := s.listKeys(ctx, []string{prefix + "*"}, func(key string) bool {
		if id, err := unesc(strings.TrimPrefix(key, prefix)); err == nil {
			cands = append(cands, cand{id: id, key: key})
		}
		return true
	})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	bs, err := s.verify(ctx, cands, func(_ cand, b *Batch) bool { return b.doc(docID) >= 0 })
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	refs := []DocRef{}
	for _, b := range bs {
		if b == nil {
			continue
		}
		d := b.Documents[b.doc(docID)]
		refs = append(refs, DocRef{BatchID: b.ID, Uploaded: b.Uploaded, State: d.State, DeliveryID: d.DeliveryID})
	}
	slices.SortFunc(refs, func(a, b DocRef) int {
		return cmp.Or(
			cmp.Compare(boolInt(a.State != DocPending), boolInt(b.State != DocPending)),
			b.Uploaded.Compare(a.Uploaded),
			strings.Compare(a.BatchID, b.BatchID))
	})
	return refs, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Due implements Store: it lists the minute buckets of the due index
// from the range's floor (or the cursor's bucket) up to now, and reads
// the batches of the page to check them.
func (s *JetStreamStore) Due(ctx context.Context, limit int, cursor string) ([]Due, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	limit = max(limit, 1)
	var (
		curOrd uint64
		curID  string
		hasCur = cursor != ""
	)
	if hasCur {
		var err error
		if curOrd, curID, err = parseJSCursor(cursor); err != nil {
			return nil, err
		}
	}
	now := s.clock()
	nowOrd := ord(now)
	r, rrev, err := s.getRange(ctx, kindDue)
	if err != nil || rrev == 0 {
		return nil, s.fail(ctx, err)
	}
	end := kindDue.bucket(now)
	start := r.Lo
	if hasCur {
		start = max(start, kindDue.bucket(ordTime(curOrd)))
	}
	const none = int64(-1) << 62
	firstKey, scannedTo := none, start-1 // for the raise: the first bucket holding a key; the buckets listed
	var out []Due
	for start <= end && len(out) < limit {
		chunkEnd := min(start+scanChunk-1, end)
		top := topK{n: limit - len(out)}
		err := s.listBuckets(ctx, kindDue.prefix, start, chunkEnd, func(b int64, rest string) bool {
			if firstKey == none || b < firstKey {
				firstKey = b
			}
			o, id, ok := parseRest(rest)
			if !ok || o > nowOrd || hasCur && !(cand{ord: curOrd, id: curID}).less(o, id) {
				return true
			}
			top.add(cand{ord: o, id: id, key: kindDue.prefix + "." + strconv.FormatInt(b, 10) + "." + rest})
			return true
		})
		if err != nil {
			return nil, s.fail(ctx, err)
		}
		scannedTo = chunkEnd
		if len(top.c) == 0 {
			start = chunkEnd + 1
			continue
		}
		bs, err := s.verify(ctx, top.c, func(c cand, b *Batch) bool {
			return (b.State == StateProcessing || b.LeaseOwner != "") && ord(b.NextPoll) == c.ord && !b.NextPoll.After(now)
		})
		if err != nil {
			return nil, s.fail(ctx, err)
		}
		for i, b := range bs {
			if b != nil {
				out = append(out, Due{BatchID: b.ID, NextPoll: b.NextPoll, Cursor: jsCursor(top.c[i].ord, b.ID)})
			}
		}
		last := top.c[len(top.c)-1]
		curOrd, curID, hasCur = last.ord, last.id, true
		if len(top.c) < top.n {
			start = chunkEnd + 1
		} else {
			start = kindDue.bucket(ordTime(last.ord))
		}
	}
	if cursor == "" {
		// Raise the floor over the empty buckets at its bottom.
		lo := scannedTo + 1
		if firstKey != none {
			lo = min(lo, firstKey)
		}
		lo = min(lo, s.raiseLimit(kindDue, now))
		if lo > r.Lo {
			r.Lo = lo
			v, _ := json.Marshal(r)
			_, _ = s.kv.Update(ctx, "r."+kindDue.name, v, rrev)
		}
	}
	return out, nil
}

// List implements Store: it lists the hour buckets of the state's index
// from the newest down, and reads the batches of the page.
func (s *JetStreamStore) List(ctx context.Context, q ListQuery) (Page, error) {
	if err := s.enter(ctx); err != nil {
		return Page{}, err
	}
	defer s.leave()
	limit := min(max(q.Limit, 1), MaxListLimit)
	now := s.clock()
	prefix := listPrefix[q.State]
	var floorInv uint64 // the first inverted time of the range
	switch q.State {
	case StateAny, StateProcessing, StateComplete, StateExpired:
	case StateOverdue:
		prefix = listPrefix[StateProcessing]
		floorInv = ^ord(now.Add(-s.Policy().PollAfter))
	default:
		return Page{}, fmt.Errorf("%w: batch state %d", ErrInvalid, q.State)
	}
	var (
		curInv uint64
		curID  string
		hasCur = q.Cursor != ""
	)
	if hasCur {
		var err error
		if curInv, curID, err = parseJSCursor(q.Cursor); err != nil {
			return Page{}, err
		}
	}
	r, rrev, err := s.getRange(ctx, kindList)
	if err != nil || rrev == 0 {
		return Page{}, s.fail(ctx, err)
	}
	start := r.Hi
	if hasCur {
		start = min(start, kindList.bucket(ordTime(^curInv)))
	}
	if floorInv != 0 {
		start = min(start, kindList.bucket(ordTime(^floorInv)))
	}
	var p Page
	var got []*Batch
	var gotCur []cand
	for start >= r.Lo && len(got) <= limit {
		chunkEnd := max(start-scanChunk+1, r.Lo)
		top := topK{n: limit + 1 - len(got)}
		err := s.listBuckets(ctx, prefix, chunkEnd, start, func(b int64, rest string) bool {
			o, id, ok := parseRest(rest)
			if !ok || o < floorInv || hasCur && !(cand{ord: curInv, id: curID}).less(o, id) {
				return true
			}
			top.add(cand{ord: o, id: id, key: prefix + "." + strconv.FormatInt(b, 10) + "." + rest})
			return true
		})
		if err != nil {
			return Page{}, s.fail(ctx, err)
		}
		if len(top.c) == 0 {
			start = chunkEnd - 1
			continue
		}
		bs, err := s.verify(ctx, top.c, func(c cand, b *Batch) bool {
			if ^ord(b.Uploaded) != c.ord {
				return false
			}
			switch q.State {
			case StateAny:
				return true
			case StateOverdue:
				return b.Overdue(now, s.Policy().PollAfter)
			}
			return b.State == q.State
		})
		if err != nil {
			return Page{}, s.fail(ctx, err)
		}
		for i, b := range bs {
			if b != nil {
				got = append(got, b)
				gotCur = append(gotCur, top.c[i])
			}
		}
		last := top.c[len(top.c)-1]
		curInv, curID, hasCur = last.ord, last.id, true
		if len(top.c) < top.n {
			start = chunkEnd - 1
		} else {
			start = kindList.bucket(ordTime(^last.ord))
		}
	}
	if len(got) > limit {
		got = got[:limit]
		p.Next = jsCursor(gotCur[limit-1].ord, gotCur[limit-1].id)
	}
	p.Batches = got
	return p, nil
}

// Watch implements Store: one watcher of the batches' keys per store,
// started by the first Watch, signals the changes made by any instance;
// this process's own changes are signalled at once, as they commit.
func (s *JetStreamStore) Watch(ctx context.Context, id string) (<-chan struct{}, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if _, _, err := s.loadBatch(ctx, id); err != nil {
		return nil, s.fail(ctx, err)
	}
	ch := make(chan struct{}, 1)
	s.watchMu.Lock()
	if s.watchers == nil { // closed
		s.watchMu.Unlock()
		close(ch)
		return ch, nil
	}
	if s.watcher == nil {
		w, err := s.kv.Watch(context.Background(), "b.*", jetstream.UpdatesOnly(), jetstream.MetaOnly())
		if err != nil {
			s.watchMu.Unlock()
			return nil, s.fail(ctx, err)
		}
		s.watcher = w
		go s.dispatch(w)
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
				delete(s.seen, id)
			}
			close(ch)
		}
	}()
	return ch, nil
}

// dispatch signals the watchers of the batches that the bucket's watcher
// reports changed, but for the revisions signalled already.
func (s *JetStreamStore) dispatch(w jetstream.KeyWatcher) {
	for e := range w.Updates() {
		if e == nil {
			continue
		}
		id, err := unesc(strings.TrimPrefix(e.Key(), "b."))
		if err != nil {
			continue
		}
		s.watchMu.Lock()
		if e.Operation() != jetstream.KeyValuePut {
			s.signal(id)
		} else {
			s.signalRev(id, e.Revision())
		}
		s.watchMu.Unlock()
	}
}

// notify signals the watchers of a batch that this process changed it,
// at rev (0 for a removal).
func (s *JetStreamStore) notify(id string, rev uint64) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if rev == 0 {
		s.signal(id)
		return
	}
	s.signalRev(id, rev)
}

// signalRev signals the watchers of a batch for revision rev, unless a
// revision as recent was signalled already (by the other path: this
// process's commit, or the bucket's watcher).
func (s *JetStreamStore) signalRev(id string, rev uint64) {
	if _, ok := s.watchers[id]; !ok || rev <= s.seen[id] {
		return
	}
	s.seen[id] = rev
	s.signal(id)
}

func (s *JetStreamStore) signal(id string) {
	for ch := range s.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Idempotency records.

// loadIdem reads an idempotency record, as loadBatch a batch.
func (s *JetStreamStore) loadIdem(ctx context.Context, key string) (*IdemRecord, uint64, error) {
	return loadEntry[IdemRecord](ctx, s.kv, idemKey(key), "idempotency key")
}

// idemOwner reads the state of the idempotency record key for drop.
func (s *JetStreamStore) idemOwner(ctx context.Context, key string) (owner, bool) {
	r, rev, err := s.loadIdem(ctx, key)
	return ownerAt(r, rev, err, idemKeys)
}

// Begin implements Store.
func (s *JetStreamStore) Begin(ctx context.Context, key, digest string) (res IdemResult, err error) {
	if err := CheckKey(key); err != nil {
		return IdemResult{}, err
	}
	if err := s.enter(ctx); err != nil {
		return IdemResult{}, err
	}
	defer s.leave()
	var tok [16]byte
	rand.Read(tok[:])
	written := map[string]uint64{}
	var final *owner
	defer func() {
		s.tidy(written, final, func(ctx context.Context) owner {
			o, ok := s.idemOwner(ctx, key)
			if !ok {
				return owner{keys: map[string]bool{}}
			}
			return o
		})
	}()
	for {
		if err := ctx.Err(); err != nil {
			return IdemResult{}, err
		}
		old, rev, err := s.loadIdem(ctx, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return IdemResult{}, s.fail(ctx, err)
		}
		if old == nil {
			rev = 0
		}
		res, rec := BeginIdem(old, key, digest, hex.EncodeToString(tok[:]), s.clock(), s.Policy())
		if rec == nil {
			return res, nil
		}
		var oldKeys []ikey
		if old != nil {
			oldKeys = idemKeys(old)
		}
		v, _ := json.Marshal(rec)
		nrev, err := s.commit(ctx, idemKey(key), rev, oldKeys, idemKeys(rec), v, written)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return IdemResult{}, s.fail(ctx, err)
		}
		final = &owner{keys: keySet(idemKeys(rec)), rev: nrev}
		return res, nil
	}
}

// ownIdem runs fn on key's record if token owns it and it is in flight:
// fn returns the record to write, or nil to remove it.
func (s *JetStreamStore) ownIdem(ctx context.Context, key, token string, fn func(r *IdemRecord) *IdemRecord) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, rev, err := s.loadIdem(ctx, key)
		if err != nil {
			return s.fail(ctx, err)
		}
		if r.Token != token || r.Done {
			return fmt.Errorf("%w: idempotency key", ErrNotOwner)
		}
		keys := idemKeys(r)
		nr := fn(r)
		if nr == nil {
			err := s.kv.Purge(ctx, idemKey(key), jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL))
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			}
			if err != nil {
				return s.fail(ctx, err)
			}
			for _, k := range keys {
				s.drop(ctx, k.key, owner{rev: rev + 1, missing: true})
			}
			return nil
		}
		v, _ := json.Marshal(nr)
		written := map[string]uint64{}
		_, err = s.commit(ctx, idemKey(key), rev, keys, idemKeys(nr), v, written)
		if errors.Is(err, errConflict) {
			continue
		}
		return s.fail(ctx, err)
	}
}

// Finish implements Store.
func (s *JetStreamStore) Finish(ctx context.Context, key, token string, a Answer) error {
	return s.ownIdem(ctx, key, token, func(r *IdemRecord) *IdemRecord {
		r.Done, r.Answer = true, a
		return r
	})
}

// Abandon implements Store.
func (s *JetStreamStore) Abandon(ctx context.Context, key, token string) error {
	return s.ownIdem(ctx, key, token, func(*IdemRecord) *IdemRecord { return nil })
}

// Purge implements Store: it lists the minute buckets of the finished
// and the expiry indexes up to the cut-off, removes each record by
// compare-and-set, then its index keys, and raises the ranges' floors
// over the buckets left empty.
func (s *JetStreamStore) Purge(ctx context.Context) (PurgeResult, error) {
	if err := s.enter(ctx); err != nil {
		return PurgeResult{}, err
	}
	defer s.leave()
	now := s.clock()
	var res PurgeResult
	cutoff := now.Add(-s.Policy().Retention)
	n, err := s.purgeIndex(ctx, kindFin, cutoff, func(c cand) bool {
		b, rev, err := s.loadBatch(ctx, c.id)
		switch {
		case errors.Is(err, ErrNotFound):
			s.drop(ctx, c.key, owner{rev: rev, missing: true})
			return false
		case err != nil:
			return false
		case b.State == StateProcessing || ord(b.Finished) != c.ord:
			s.drop(ctx, c.key, ownerOf(b))
			return false
		}
		if err := s.kv.Purge(ctx, batchKey(c.id), jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL)); err != nil {
			return false // changed meanwhile, or unreachable: next time
		}
		for _, k := range batchKeys(b) {
			s.drop(ctx, k.key, owner{rev: rev + 1, missing: true})
		}
		s.notify(c.id, 0)
		return true
	})
	res.Batches = n
	if err != nil {
		return res, s.fail(ctx, err)
	}
	n, err = s.purgeIndex(ctx, kindExp, now, func(c cand) bool {
		r, rev, err := s.loadIdem(ctx, c.id)
		switch {
		case errors.Is(err, ErrNotFound):
			s.drop(ctx, c.key, owner{rev: rev, missing: true})
			return false
		case err != nil:
			return false
		case ord(r.Expires) != c.ord:
			s.drop(ctx, c.key, owner{keys: keySet(idemKeys(r)), rev: rev})
			return false
		}
		if err := s.kv.Purge(ctx, idemKey(c.id), jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL)); err != nil {
			return false
		}
		for _, k := range idemKeys(r) {
			s.drop(ctx, k.key, owner{rev: rev + 1, missing: true})
		}
		return true
	})
	res.Idempotency = n
	if err != nil {
		return res, s.fail(ctx, err)
	}
	if r, rev, err := s.getRange(ctx, kindList); err == nil {
		s.raise(ctx, kindList, r, rev, s.raiseLimit(kindList, now))
	}
	return res, nil
}

// purgeIndex calls fn for the entries of kind's index at cutoff or
// before, purgeChunk at a time, and counts those fn removed; then it
// raises the floor of the range.
func (s *JetStreamStore) purgeIndex(ctx context.Context, k *ixKind, cutoff time.Time, fn func(cand) bool) (int, error) {
	r, rev, err := s.getRange(ctx, k)
	if err != nil || rev == 0 {
		return 0, err
	}
	cutOrd := ord(cutoff)
	end := k.bucket(cutoff)
	n := 0
	var (
		curOrd uint64
		curID  string
		hasCur bool
	)
	for start := r.Lo; start <= end; {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		chunkEnd := min(start+scanChunk-1, end)
		top := topK{n: purgeChunk}
		err := s.listBuckets(ctx, k.prefix, start, chunkEnd, func(b int64, rest string) bool {
			o, id, ok := parseRest(rest)
			if !ok || o > cutOrd || hasCur && !(cand{ord: curOrd, id: curID}).less(o, id) {
				return true
			}
			top.add(cand{ord: o, id: id, key: k.prefix + "." + strconv.FormatInt(b, 10) + "." + rest})
			return true
		})
		if err != nil {
			return n, err
		}
		for _, c := range top.c {
			if fn(c) {
				n++
			}
		}
		if len(top.c) < top.n {
			start = chunkEnd + 1
			continue
		}
		last := top.c[len(top.c)-1]
		curOrd, curID, hasCur = last.ord, last.id, true
		start = k.bucket(ordTime(last.ord))
	}
	s.raise(ctx, k, r, rev, min(end, s.raiseLimit(k, s.clock())))
	return n, nil
}

// Stats implements Store. It counts the keys of the state indexes and
// the idempotency records: time in proportion to their number, memory
// constant.
func (s *JetStreamStore) Stats(ctx context.Context) (Stats, error) {
	if err := s.enter(ctx); err != nil {
		return Stats{}, err
	}
	defer s.leave()
	var st Stats
	procPrefix := listPrefix[StateProcessing] + "."
	floorInv := ^ord(s.clock().Add(-s.Policy().PollAfter))
	for _, c := range []struct {
		filter string
		n      *int
	}{
		{listPrefix[StateProcessing] + ".>", &st.Processing},
		{listPrefix[StateComplete] + ".>", &st.Complete},
		{listPrefix[StateExpired] + ".>", &st.Expired},
		{"i.*", &st.Idempotency},
	} {
		err := s.listKeys(ctx, []string{c.filter}, func(key string) bool {
			*c.n++
			if rest, ok := strings.CutPrefix(key, procPrefix); ok {
				// l.p.<hour>.<inverted upload time>.<batch>
				if _, rest, ok := strings.Cut(rest, "."); ok {
					if o, _, ok := parseRest(rest); ok && o >= floorInv {
						st.Overdue++
					}
				}
			}
			return true
		})
		if err != nil {
			return Stats{}, s.fail(ctx, err)
		}
	}
	return st, nil
}

// Close implements Store: it waits for the operations in progress, stops
// the watcher and closes the Watch channels. The connection is the
// caller's.
func (s *JetStreamStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watcher != nil {
		_ = s.watcher.Stop()
	}
	for id, m := range s.watchers {
		for ch := range m {
			close(ch)
		}
		delete(s.watchers, id)
	}
	s.watchers = nil
	return nil
}
