package queue

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/mask"
)

// Backend is a durable queue as the routes that hand it callbacks see
// it. The Caddy modules of the atlas.queues namespace implement it (the
// spool and JetStream backends); a route loads one without importing
// it. The routes of a config, and of the config a reload replaces, that
// name one queue share its store.
type Backend interface {
	// Name names the queue in logs and in the admin API: a spool's
	// directory, or jetstream:<stream>.
	Name() string

	// Attach adds u to the users of the queue, opening nothing (a
	// config that is only validated has no side effects). Two users of
	// one config may share a queue only with the same DeliveryKey, and
	// two modules of one config that name one queue only with the same
	// settings: otherwise Attach returns an error that names both.
	Attach(u *User) error

	// Open opens the queue if no user has it open yet (creating a
	// spool's directory, connecting to NATS), and makes u, attached,
	// the user whose delivery is in effect: that of the user opened
	// last, so that a reload applies the new config's at once. The
	// routes open their queues when their config starts.
	Open(u *User) (Store, error)

	// IsOpen reports whether the queue is open already, in this
	// process: on a reload, a route opens it as it is provisioned, so
	// that it never answers a callback 503 while its config starts.
	IsOpen() bool

	// Differs returns the first setting that o configures differently
	// from this queue if o names the same queue, "" otherwise: one queue
	// has one set of settings in a config.
	Differs(o Backend) string

	// Detach ends u's use of the queue, opened or not: if its delivery
	// was in effect, that of the user opened last before it applies
	// again; the last user closes the queue, waiting a while for the
	// deliveries in progress.
	Detach(u *User) error
}

// User is a route that hands callbacks to a shared queue, and says how
// they are delivered.
type User struct {
	// Name names the user in errors, e.g. "the callback route
	// /hooks/atlas".
	Name string

	// Config identifies the loaded config the user belongs to.
	Config any

	// Deliver returns the delivery of the user's callbacks, through
	// the given transport (the queue's connection pool).
	Deliver func(transport http.RoundTripper) DeliverFunc

	// DeliveryKey identifies where and how the user delivers: two users
	// of one config with different keys cannot share a queue.
	DeliveryKey string

	// Logger is the user's: the queue tells it what concerns its
	// callbacks, such as that they are stored unencrypted.
	Logger *zap.Logger

	// Masker masks what the admin API shows of the queue's bodies while
	// this user's delivery is in effect; nil masks nothing.
	Masker *mask.Masker
}
