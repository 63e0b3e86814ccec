package atlasclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
)

// memStore is a SharedTokenStore in memory, as a fleet's storage would be
// seen by its instances: one token and one lock for every source using it.
type memStore struct {
	lock chan struct{}

	mu     sync.Mutex
	tok    Token
	loads  int
	stores int
	locks  int

	failLoad, failStore, failLock error
}

func newMemStore() *memStore { return &memStore{lock: make(chan struct{}, 1)} }

func (m *memStore) Lock(ctx context.Context) (func(context.Context) error, error) {
	m.mu.Lock()
	err := m.failLock
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case m.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m.mu.Lock()
	m.locks++
	m.mu.Unlock()
	var once sync.Once
	return func(context.Context) error {
		once.Do(func() { <-m.lock })
		return nil
	}, nil
}

func (m *memStore) Load(context.Context) (Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loads++
	return m.tok, m.failLoad
}

func (m *memStore) Store(_ context.Context, tok Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failStore != nil {
		return m.failStore
	}
	m.stores++
	m.tok = tok
	return nil
}

func (m *memStore) stored() Token {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tok
}

func (m *memStore) set(tok Token) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tok = tok
}

// locked reports whether someone holds the lock.
func (m *memStore) locked() bool { return len(m.lock) == 1 }

// sharedObserver records the shared-store hooks.
type sharedObserver struct {
	recordingObserver
	mu       sync.Mutex
	loaded   int
	failures []string
}

func (o *sharedObserver) TokenLoaded(time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.loaded++
}

func (o *sharedObserver) SharedStoreFailed(op string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures = append(o.failures, op+": "+err.Error())
}

// fleet returns n sources for fa sharing store and clock.
func fleet(t *testing.T, n int, fa *fakeAtlas, store *memStore, clock *testutil.Clock, edit func(*TokenOptions)) []*TokenSource {
	t.Helper()
	var out []*TokenSource
	for range n {
		out = append(out, newSource(t, fa, clock, func(o *TokenOptions) {
			o.Shared = store
			if edit != nil {
				edit(o)
			}
		}))
	}
	return out
}

// tokenAll calls Token from callers goroutines spread over sources and
// returns the values they got.
func tokenAll(t *testing.T, sources []*TokenSource, callers int) map[string]int {
	t.Helper()
	var (
		mu  sync.Mutex
		got = map[string]int{}
		wg  sync.WaitGroup
	)
	for i := range callers {
		wg.Go(func() {
			tok, err := sources[i%len(sources)].Token(context.Background())
			if err != nil {
				t.Errorf("Token: %v", err)
				return
			}
			mu.Lock()
			got[tok.Value]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

func TestSharedColdFleetFetchesOnce(t *testing.T) {
	fa := newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		time.Sleep(20 * time.Millisecond) // long enough for the others to queue on the lock
		okToken(3600)(w, r, n)
	}, nil)
	store := newMemStore()
	sources := fleet(t, 3, fa, store, testutil.NewClock(testutil.Epoch), nil)

	got := tokenAll(t, sources, 300)
	if n := fa.authCalls.Load(); n != 1 {
		t.Errorf("authtoken calls = %d for a cold fleet of 3, want 1", n)
	}
	if got["tok-1"] != 300 {
		t.Errorf("tokens handed out = %v, want tok-1 for all 300 callers", got)
	}
	if s := store.stored(); s.Value != "tok-1" {
		t.Errorf("stored %q, want tok-1", s.Value)
	}
	if store.locked() {
		t.Error("the store is still locked")
	}
}

func TestSharedRefreshFetchesOncePerLifetime(t *testing.T) {
	fa := newFakeAtlas(t, okToken(100), nil)
	store := newMemStore()
	clock := testutil.NewClock(testutil.Epoch)
	sources := fleet(t, 3, fa, store, clock, nil)
	tokenAll(t, sources, 30)

	for round := 2; round <= 4; round++ {
		clock.Advance(76 * time.Second) // into the last 25% of 100s
		tokenAll(t, sources, 30)        // starts each source's background refresh
		for _, s := range sources {
			waitRefresh(t, s)
		}
		want := fmt.Sprintf("tok-%d", round)
		if n := fa.authCalls.Load(); n != int64(round) {
			t.Fatalf("round %d: authtoken calls = %d, want %d (one per lifetime for the fleet)", round, n, round)
		}
		if got := tokenAll(t, sources, 30); got[want] != 30 {
			t.Fatalf("round %d: tokens after the refresh = %v, want %s everywhere", round, got, want)
		}
	}
	if store.locked() {
		t.Error("the store is still locked")
	}
}

func TestSharedInvalidateHoldsForTheFleet(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	clock := testutil.NewClock(testutil.Epoch)
	ab := fleet(t, 2, fa, store, clock, nil)
	a, b := ab[0], ab[1]
	tokenAll(t, []*TokenSource{a, b}, 10)

	// a gets a 401 for tok-1: it fetches tok-2 and stores it.
	a.Invalidate("tok-1")
	if v := getTokens(t, a, 1)[0]; v != "tok-2" {
		t.Fatalf("a after its 401: %q, want tok-2", v)
	}
	if s := store.stored(); s.Value != "tok-2" {
		t.Fatalf("stored %q, want tok-2: the rejected token must not stay in the store", s.Value)
	}
	// b still holds tok-1 until its own 401; then it takes tok-2 from
	// the store without calling authtoken.
	if v := getTokens(t, b, 1)[0]; v != "tok-1" {
		t.Fatalf("b before its 401: %q", v)
	}
	b.Invalidate("tok-1")
	if v := getTokens(t, b, 1)[0]; v != "tok-2" {
		t.Fatalf("b after its 401: %q, want tok-2 from the store", v)
	}
	if n := fa.authCalls.Load(); n != 2 {
		t.Errorf("authtoken calls = %d, want 2: a stale 401 must not refetch", n)
	}

	// A token stored by someone else and rejected here is not taken.
	store.set(Token{Value: "planted", IssuedAt: clock.Now(), Expiry: clock.Now().Add(time.Hour)})
	b.Invalidate("tok-2")
	b.Invalidate("planted")
	if v := getTokens(t, b, 1)[0]; v != "tok-3" {
		t.Fatalf("b after rejecting the stored token: %q, want tok-3", v)
	}
	if s := store.stored(); s.Value != "tok-3" {
		t.Errorf("stored %q, want tok-3", s.Value)
	}
}

func TestSharedStoredTokenInItsWindowIsRefreshed(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	clock := testutil.NewClock(testutil.Epoch)
	now := clock.Now()
	for _, tt := range []struct {
		name      string
		tok       Token
		wantFetch bool
	}{
		{"usable", Token{Value: "fresh", IssuedAt: now, Expiry: now.Add(time.Hour)}, false},
		{"in its window", Token{Value: "old", IssuedAt: now.Add(-50 * time.Minute), Expiry: now.Add(10 * time.Minute)}, true},
		{"expired", Token{Value: "dead", IssuedAt: now.Add(-2 * time.Hour), Expiry: now.Add(-time.Hour)}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store.set(tt.tok)
			before := fa.authCalls.Load()
			s := newSource(t, fa, clock, func(o *TokenOptions) { o.Shared = store })
			v := getTokens(t, s, 1)[0]
			fetched := fa.authCalls.Load() != before
			if fetched != tt.wantFetch || (fetched == (v == tt.tok.Value)) {
				t.Errorf("got %q, fetched %v; want a fetch: %v", v, fetched, tt.wantFetch)
			}
			if fetched && store.stored().Value != v {
				t.Errorf("the fetched token was not stored")
			}
		})
	}
}

func TestSharedWaiterTakesTheHoldersToken(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	// Another instance holds the lock while it fetches.
	unlock, err := store.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store })
	got := make(chan string, 1)
	go func() { got <- getTokens(t, s, 1)[0] }()
	time.Sleep(3 * sharedPoll)
	store.set(Token{Value: "from-the-holder", IssuedAt: time.Now(), Expiry: time.Now().Add(time.Hour)})
	select {
	case v := <-got:
		if v != "from-the-holder" {
			t.Errorf("got %q, want the holder's token", v)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the waiter did not take the token the holder stored")
	}
	if n := fa.authCalls.Load(); n != 0 {
		t.Errorf("authtoken calls = %d, want 0", n)
	}
	// The lock the waiter obtains after the holder is released at once.
	_ = unlock(context.Background())
	testutil.WaitFor(t, time.Second, "the late lock to be released", func() bool { return !store.locked() })
}

func TestSharedStoreFailuresFallBackToOwnToken(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	boom := errors.New("storage unreachable")
	store.failLoad, store.failLock, store.failStore = boom, boom, boom
	obs := &sharedObserver{}
	s := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store; o.Observer = obs })
	if v := getTokens(t, s, 1)[0]; v != "tok-1" {
		t.Fatalf("with a failing store: %q, want its own tok-1", v)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	joined := strings.Join(obs.failures, "; ")
	for _, op := range []string{"load: ", "lock: ", "store: "} {
		if !strings.Contains(joined, op+"storage unreachable") {
			t.Errorf("failures %q lack %q", joined, op)
		}
	}
}

func TestSharedObserverHearsLoads(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	obs := &sharedObserver{}
	a := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store })
	b := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store; o.Observer = obs })
	getTokens(t, a, 1)
	getTokens(t, b, 1)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.loaded != 1 || len(obs.outcomes) != 0 || len(obs.failures) != 0 {
		t.Errorf("b: %d loads, fetches %v, failures %v; want 1 load and nothing else", obs.loaded, obs.outcomes, obs.failures)
	}
}

func TestSharedCloseWhileWaitingForTheLock(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	unlock, _ := store.Lock(context.Background())
	defer unlock(context.Background())
	s := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store })
	errc := make(chan error, 1)
	go func() {
		_, err := s.Token(context.Background())
		errc <- err
	}()
	time.Sleep(2 * sharedPoll)
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end the wait for the lock")
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Token: %v, want ErrClosed", err)
	}
	if n := fa.authCalls.Load(); n != 0 {
		t.Errorf("authtoken calls = %d, want 0", n)
	}
}

// oneLiveAtlas is a fake Atlas that, like Atlas with one live token per
// client, accepts only the token it issued last.
func oneLiveAtlas(t *testing.T, expiresIn int) *fakeAtlas {
	var last atomic.Value
	last.Store("")
	return newFakeAtlas(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		v := fmt.Sprintf("tok-%d", n)
		last.Store(v)
		writeToken(w, v, expiresIn)
	}, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Token") != last.Load().(string) {
			http.Error(w, `{"error":"Invalid or expired token"}`, http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

func TestSharedFleetWithOneLiveTokenNeverFails(t *testing.T) {
	fa := oneLiveAtlas(t, 100)
	store := newMemStore()
	clock := testutil.NewClock(testutil.Epoch)
	sources := fleet(t, 3, fa, store, clock, nil)
	var replays atomic.Int64
	clients := make([]*http.Client, len(sources))
	for i, s := range sources {
		clients[i] = &http.Client{Transport: &Transport{Source: s, OnReplay: func() { replays.Add(1) }}}
	}
	burst := func(round int) {
		var wg sync.WaitGroup
		for i := range 150 {
			wg.Go(func() {
				resp, err := clients[i%3].Get(fa.URL + "/v1/docstream/extracts")
				if err != nil {
					t.Errorf("round %d: %v", round, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("round %d: a request got %d", round, resp.StatusCode)
				}
			})
		}
		wg.Wait()
	}
	burst(1)
	for round := 2; round <= 4; round++ {
		clock.Advance(76 * time.Second)
		burst(round)
		for _, s := range sources {
			waitRefresh(t, s)
		}
		burst(round)
	}
	if n := fa.authCalls.Load(); n != 4 {
		t.Errorf("authtoken calls = %d over 4 lifetimes, want 4", n)
	}
	t.Logf("replays after a 401: %d", replays.Load())
}

func TestSharedUnreadableStoreReportedOncePerRefresh(t *testing.T) {
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	store.failLoad = errors.New("sealed with another secret")
	unlock, _ := store.Lock(context.Background()) // another instance fetching
	obs := &sharedObserver{}
	s := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store; o.Observer = obs })
	got := make(chan string, 1)
	go func() { got <- getTokens(t, s, 1)[0] }()
	time.Sleep(10 * sharedPoll) // the waiter polls the store meanwhile
	_ = unlock(context.Background())
	if v := <-got; v != "tok-1" {
		t.Fatalf("got %q, want its own tok-1", v)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.failures) != 1 || !strings.HasPrefix(obs.failures[0], "load: ") {
		t.Errorf("failures = %q, want the one load failure, not one per poll", obs.failures)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.loads < 5 {
		t.Errorf("the store was read %d times while waiting, want it polled", store.loads)
	}
}

type refusalObserver struct {
	recordingObserver
	mu      sync.Mutex
	refused [][2]time.Duration
}

func (o *refusalObserver) TokenRefused(age, remaining time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refused = append(o.refused, [2]time.Duration{age, remaining})
}

func TestRefusalObserver(t *testing.T) {
	fa := newFakeAtlas(t, okToken(100), nil)
	clock := testutil.NewClock(testutil.Epoch)
	obs := &refusalObserver{}
	s := newSource(t, fa, clock, func(o *TokenOptions) { o.Observer = obs })
	getTokens(t, s, 1)
	clock.Advance(10 * time.Second)
	s.Invalidate("tok-0") // not the cached token: nothing dropped
	s.Invalidate("tok-1")
	s.Invalidate("tok-1") // already dropped
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if want := [][2]time.Duration{{10 * time.Second, 90 * time.Second}}; fmt.Sprint(obs.refused) != fmt.Sprint(want) {
		t.Errorf("refusals %v, want %v", obs.refused, want)
	}
}

func TestSharedLockNeverFreedFetchesWithoutIt(t *testing.T) {
	defer func(d time.Duration) { sharedLockWait = d }(sharedLockWait)
	sharedLockWait = 200 * time.Millisecond
	fa := newFakeAtlas(t, nil, nil)
	store := newMemStore()
	unlock, _ := store.Lock(context.Background()) // a holder that hangs
	defer unlock(context.Background())
	obs := &sharedObserver{}
	s := newSource(t, fa, nil, func(o *TokenOptions) { o.Shared = store; o.Observer = obs })
	start := time.Now()
	if v := getTokens(t, s, 1)[0]; v != "tok-1" {
		t.Fatalf("got %q, want its own tok-1", v)
	}
	if took := time.Since(start); took < sharedLockWait {
		t.Errorf("fetched after %s, before the lock wait of %s was over", took, sharedLockWait)
	}
	if store.stored().Value != "tok-1" {
		t.Error("the token fetched without the lock was not stored for the others")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.failures) != 1 || !strings.HasPrefix(obs.failures[0], "lock: ") {
		t.Errorf("failures = %q, want the lock's", obs.failures)
	}
}
