package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-atlas/caddy-atlas/ledger"
)

// Delivery is what a poll hands to the durable queue: the documents its
// claim won, in the shape of a callback.
type Delivery struct {
	// ID is the delivery id the documents were claimed with: the queue
	// entry's id (X-Atlas-Callback-Id), its deduplication key.
	ID string
	// BatchID is the batch (X-Atlas-Batch-Id).
	BatchID string
	// Body is {"data":[...]}: the won documents' elements of data,
	// byte for byte as extracts returned them, in upload order.
	Body []byte
	// DocumentIDs are the won documents, in the order of Body.
	DocumentIDs []string
}

// Enqueuer stores deliveries in the durable queue.
type Enqueuer interface {
	// Enqueue stores d under d.ID, with the headers X-Atlas-Batch-Id
	// and X-Atlas-Result-Source: poll, masked and signed as a callback
	// is, and returns once it is durable. A d.ID stored already is not
	// an error (the queue deduplicates). ctx carries the poll's span.
	Enqueue(ctx context.Context, d Delivery) error
}

// EnqueueFunc adapts a function to Enqueuer.
type EnqueueFunc func(ctx context.Context, d Delivery) error

// Enqueue calls f.
func (f EnqueueFunc) Enqueue(ctx context.Context, d Delivery) error { return f(ctx, d) }

// Options configure a Reconciler.
type Options struct {
	// Store is the ledger. Required.
	Store ledger.Store
	// Fetcher reads extracts; nil runs the lease loop without polling,
	// so that batches still expire (no polling configured).
	Fetcher Fetcher
	// Enqueuer receives the deliveries. Required with a Fetcher.
	Enqueuer Enqueuer
	// Policy must be the store's (PollEvery and GiveUpAfter are read).
	// Zero: the store's Policy() if it has one, else the defaults.
	Policy ledger.Policy
	// Instance names this instance in lease owners; default random.
	Instance string
	// Rate is the most extracts requests per second of this instance,
	// all batches together (poll_rate). Default 1.
	Rate float64
	// Concurrency bounds the polls in flight. Default 4.
	Concurrency int
	// LeaseTTL is a poll's lease, renewed between pages while it runs.
	// Default 2m.
	LeaseTTL time.Duration
	// ScanEvery is the time between two scans of the due batches.
	// Default 5s.
	ScanEvery time.Duration
	// DuePage is the page size of the due scan. Default 100.
	DuePage int
	// MaxPages bounds the pages of one poll. Default 1000 (50000
	// documents at 50 a page).
	MaxPages int
	// BackoffMin and BackoffMax bound the exponential pause of every
	// poll after consecutive failures without Retry-After. Defaults 1s
	// and 5m.
	BackoffMin, BackoffMax time.Duration
	// Observer receives metrics and tracing hooks. Default NopObserver.
	Observer Observer
	// Now is the clock; default time.Now. Tick is the longest real
	// sleep between two readings of it (default 1s): a test with a
	// fake clock sets a millisecond.
	Now  func() time.Time
	Tick time.Duration
}

// Reconciler polls the batches the ledger says are due. See the
// package documentation.
type Reconciler struct {
	opts  Options
	store ledger.Store
	obs   Observer
	lim   *limiter
	seq   atomic.Uint64
	sem   chan struct{}

	mu       sync.Mutex
	started  bool
	cancel   context.CancelFunc
	inFlight map[string]bool // batches dispatched, bounded by Concurrency

	wg sync.WaitGroup
}

// New returns a reconciler; Start runs it.
func New(o Options) (*Reconciler, error) {
	if o.Store == nil {
		return nil, errors.New("reconcile: no ledger store")
	}
	if o.Fetcher != nil && o.Enqueuer == nil {
		return nil, errors.New("reconcile: a fetcher without an enqueuer")
	}
	if o.Policy == (ledger.Policy{}) {
		if p, ok := o.Store.(interface{ Policy() ledger.Policy }); ok {
			o.Policy = p.Policy()
		}
	}
	o.Policy = o.Policy.WithDefaults()
	if o.Instance == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.Instance = hex.EncodeToString(b[:])
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.LeaseTTL, 2*time.Minute)
	def(&o.ScanEvery, 5*time.Second)
	def(&o.BackoffMin, time.Second)
	def(&o.BackoffMax, 5*time.Minute)
	def(&o.Tick, time.Second)
	if o.Rate <= 0 {
		o.Rate = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.DuePage <= 0 {
		o.DuePage = 100
	}
	if o.MaxPages <= 0 {
		o.MaxPages = 1000
	}
	if o.Observer == nil {
		o.Observer = NopObserver{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Reconciler{opts: o, store: o.Store, obs: o.Observer, sem: make(chan struct{}, o.Concurrency), inFlight: map[string]bool{}}
	r.lim = &limiter{r: r, interval: time.Duration(float64(time.Second) / o.Rate)}
	return r, nil
}

func (r *Reconciler) now() time.Time { return r.opts.Now() }

// Instance returns the instance id of the lease owners.
func (r *Reconciler) Instance() string { return r.opts.Instance }

// Start runs the loop until ctx is done or Close. It returns at once.
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return errors.New("reconcile: started already")
	}
	r.started = true
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(ctx)
	}()
	return nil
}

// Close stops the loop and waits for the polls in flight, which are
// cancelled: a poll cut short leaves its lease to expire, and the next
// poll of the batch repairs what it left.
func (r *Reconciler) Close() error {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
	return nil
}

func (r *Reconciler) run(ctx context.Context) {
	for ctx.Err() == nil {
		start := r.now()
		r.Scan(ctx)
		if r.sleepUntil(ctx, start.Add(r.opts.ScanEvery)) != nil {
			return
		}
	}
}

// Scan reads the due batches, a page at a time, and starts a poll of
// each (at most Concurrency at a time; it blocks while they are all
// busy). It returns when the due index has no more, without waiting for
// the last polls. Start's loop calls it every ScanEvery; a test or a
// benchmark may call it directly.
func (r *Reconciler) Scan(ctx context.Context) (dispatched int, err error) {
	cursor := ""
	for ctx.Err() == nil {
		page, err := r.store.Due(ctx, r.opts.DuePage, cursor)
		if err != nil {
			return dispatched, err
		}
		for _, d := range page {
			select {
			case r.sem <- struct{}{}:
			case <-ctx.Done():
				return dispatched, ctx.Err()
			}
			r.mu.Lock()
			busy := r.inFlight[d.BatchID]
			if !busy {
				r.inFlight[d.BatchID] = true
			}
			r.mu.Unlock()
			if busy {
				<-r.sem
				continue
			}
			dispatched++
			r.wg.Add(1)
			go func(id string) {
				defer func() {
					r.mu.Lock()
					delete(r.inFlight, id)
					r.mu.Unlock()
					<-r.sem
					r.wg.Done()
				}()
				r.Poll(ctx, id)
			}(d.BatchID)
		}
		if len(page) < r.opts.DuePage {
			return dispatched, nil
		}
		cursor = page[len(page)-1].Cursor
	}
	return dispatched, ctx.Err()
}

// Wait blocks until the polls started by Scan are over.
func (r *Reconciler) Wait() {
	for {
		r.mu.Lock()
		n := len(r.inFlight)
		r.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// owner returns a lease owner unique to one poll.
func (r *Reconciler) owner() string {
	return fmt.Sprintf("%s-%d", r.opts.Instance, r.seq.Add(1))
}
