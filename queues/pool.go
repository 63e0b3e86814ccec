package queues

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/internal/outbound"
	"github.com/caddy-atlas/caddy-atlas/mask"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// errNotProvisioned is the error of a queue module used unprovisioned.
var errNotProvisioned = errors.New("the queue module is not provisioned")

// drainTimeout bounds how long the last user of a queue waits for its
// deliveries in progress when it closes it (caddy stop); cancelled
// deliveries stay pending and are redelivered at the next start (by any
// instance, for JetStream).
const drainTimeout = 10 * time.Second

// pool holds the open queues, shared by every route and config that
// names the same one, so that a config reload keeps the queue and its
// deliveries in progress. Keys are a spool's directory or a JetStream
// stream and its servers; values are *shared.
var pool = caddy.NewUsagePool()

// backend is what the pool needs of a queue module.
type backend interface {
	queue.Backend
	// poolKey names the queue in the pool.
	poolKey() string
	// open opens the queue with the delivery of a; the store's deliveries
	// go through transport.
	open(a attachment, transport http.RoundTripper) (store, error)
	// reconfigure applies a's settings and delivery to the open store.
	reconfigure(s store, a attachment, transport http.RoundTripper) error
	// differs returns the first setting o configures differently, ""
	// if none: two modules of one config that name one queue must agree.
	differs(o backend) string
	// maxBytes is the queue's size limit for the metrics, 0 for none.
	maxBytes() int64
	// log is the module's logger.
	log() *zap.Logger
	// encrypted reports whether the queue encrypts what it stores.
	encrypted() bool
}

// store is an open queue.Store with its Close.
type store interface {
	queue.Store
}

// attachment is a user of a queue and the module it reached it through.
type attachment struct {
	u *queue.User
	b backend
}

// shared is an open queue in the pool, with the HTTP transport its
// deliveries use and its users, in the order they opened it: the
// settings and delivery of the last are in effect.
type shared struct {
	key       string
	name      string
	store     store
	transport *http.Transport

	mu    sync.Mutex
	users []attachment
}

// Destruct closes the queue when the last config using it is unloaded:
// it waits up to drainTimeout for the deliveries in progress; those it
// cancels stay pending.
func (s *shared) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	err := s.store.Close(ctx)
	s.transport.CloseIdleConnections()
	return err
}

// current returns the attachment in effect; ok is false if none.
func (s *shared) current() (attachment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.users) == 0 {
		return attachment{}, false
	}
	return s.users[len(s.users)-1], true
}

// attached are the users attached to each queue (by pool key), open or
// not yet: those of one config are checked against each other when they
// attach, before anything opens.
var attached = struct {
	sync.Mutex
	users map[string][]attachment
}{users: make(map[string][]attachment)}

// poolRef is a module's hold on its queue in the pool.
type poolRef struct {
	metricsRegistry *prometheus.Registry

	mu     sync.Mutex
	users  []*queue.User           // attached through this module
	opened map[*queue.User]*shared // those of users that opened the queue
}

// attach adds u to the users of b's queue, opening nothing: it checks u
// against the users of the same config.
func (p *poolRef) attach(b backend, u *queue.User) error {
	registerMetrics(p.metricsRegistry)
	a := attachment{u: u, b: b}
	key := b.poolKey()
	attached.Lock()
	if err := conflict(b.Name(), attached.users[key], a); err != nil {
		attached.Unlock()
		return err
	}
	attached.users[key] = append(attached.users[key], a)
	attached.Unlock()
	p.mu.Lock()
	p.users = append(p.users, u)
	p.mu.Unlock()
	if u.Logger != nil && !b.encrypted() {
		u.Logger.Warn("durable mode without encryption_key: payloads are stored unencrypted", zap.String("queue", b.Name()))
	}
	return nil
}

// conflict checks a against the users of the same config of the queue
// name: one delivery, and one set of settings.
func conflict(name string, users []attachment, a attachment) error {
	for _, o := range users {
		if a.u.Config == nil || o.u.Config != a.u.Config {
			continue
		}
		if o.u.DeliveryKey != a.u.DeliveryKey {
			return fmt.Errorf("queue %s is also used by %s of this config with other delivery settings; give each route its own queue, or the same settings",
				name, o.u.Name)
		}
		if o.b != a.b {
			if diff := o.b.differs(a.b); diff != "" {
				return fmt.Errorf("queue %s is configured twice in this config, with a different %s: for %s and for %s; configure it once (in the global atlas options) or alike in both places",
					name, diff, o.u.Name, a.u.Name)
			}
		}
	}
	return nil
}

// open takes b's queue from the pool, opening it with u's delivery on
// first use, and makes u's delivery the one in effect. u must be
// attached.
func (p *poolRef) open(b backend, u *queue.User) (queue.Store, error) {
	p.mu.Lock()
	s, opened := p.opened[u]
	ok := slices.Contains(p.users, u)
	p.mu.Unlock()
	switch {
	case opened:
		return s.store, nil
	case !ok:
		return nil, fmt.Errorf("queue %s: %s is not attached", b.Name(), u.Name)
	}
	a := attachment{u: u, b: b}
	key := b.poolKey()
	val, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		s := &shared{key: key, name: b.Name(), transport: outbound.NewTransport()}
		st, err := b.open(a, s.transport)
		if err != nil {
			return nil, err
		}
		s.store = st
		return s, nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening queue %s: %w", b.Name(), err)
	}
	s = val.(*shared)
	if err := s.add(a); err != nil {
		_, _ = pool.Delete(key)
		return nil, err
	}
	p.mu.Lock()
	if p.opened == nil {
		p.opened = make(map[*queue.User]*shared)
	}
	p.opened[u] = s
	p.mu.Unlock()
	return s.store, nil
}

// add applies a's settings and delivery and adds it.
func (s *shared) add(a attachment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := a.b.reconfigure(s.store, a, s.transport); err != nil {
		return err
	}
	s.users = append(s.users, a)
	return nil
}

// detach removes u; if its settings were in effect, those of the last
// remaining user apply again. The last user closes the queue.
func (p *poolRef) detach(b backend, u *queue.User) error {
	p.mu.Lock()
	i := slices.Index(p.users, u)
	if i >= 0 {
		p.users = slices.Delete(p.users, i, i+1)
	}
	s := p.opened[u]
	delete(p.opened, u)
	p.mu.Unlock()
	if i < 0 {
		return nil
	}
	key := b.poolKey()
	attached.Lock()
	attached.users[key] = slices.DeleteFunc(attached.users[key], func(a attachment) bool { return a.u == u })
	if len(attached.users[key]) == 0 {
		delete(attached.users, key)
	}
	attached.Unlock()
	if s == nil {
		return nil // never opened
	}
	s.remove(u)
	_, err := pool.Delete(s.key)
	return err
}

// remove removes u; if its settings were in effect, those of the last
// remaining user apply again.
func (s *shared) remove(u *queue.User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.users, func(a attachment) bool { return a.u == u })
	if i < 0 {
		return
	}
	wasCurrent := i == len(s.users)-1
	s.users = slices.Delete(s.users, i, i+1)
	if wasCurrent && len(s.users) > 0 {
		last := s.users[len(s.users)-1]
		if err := last.b.reconfigure(s.store, last, s.transport); err != nil {
			last.b.log().Error("restoring the queue settings", zap.String("queue", s.name), zap.Error(err))
		}
	}
}

// OpenQueue is an open durable queue, as the admin API sees it.
type OpenQueue struct {
	// Name names the queue: a spool's directory, or jetstream:<stream>.
	Name string
	// Store is the queue.
	Store queue.Store
	// Masker is the masker of the user whose delivery is in effect (nil
	// if it masks nothing), for the admin API's ?body=1.
	Masker *mask.Masker
	// MaxBytes is a spool's max_spool_size; 0 for other queues.
	MaxBytes int64
}

// Open returns the open queues: the spools sorted by directory, then
// the JetStream queues (named jetstream:<stream>) sorted by name.
func Open() []OpenQueue {
	var out []OpenQueue
	for _, s := range live() {
		q := OpenQueue{Name: s.name, Store: s.store}
		if a, ok := s.current(); ok {
			q.Masker = a.u.Masker
			q.MaxBytes = a.b.maxBytes()
		}
		out = append(out, q)
	}
	return out
}

// live returns the open queues: the spools sorted by directory, then the
// JetStream queues sorted by name.
func live() []*shared {
	var out []*shared
	pool.Range(func(_, v any) bool {
		if s, ok := v.(*shared); ok && s != nil && s.store != nil {
			out = append(out, s)
		}
		return true
	})
	slices.SortFunc(out, func(a, b *shared) int {
		aj, bj := strings.HasPrefix(a.name, "jetstream:"), strings.HasPrefix(b.name, "jetstream:")
		if aj != bj {
			if aj {
				return 1
			}
			return -1
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}
