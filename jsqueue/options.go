package jsqueue

import (
	"crypto/tls"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// Defaults of Options, beside the delivery defaults of every Store
// (queue.DefaultRetention etc.), which apply here too.
const (
	DefaultStream         = "ATLAS_CALLBACKS"
	DefaultReplicas       = 3
	DefaultAckWait        = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
	// DefaultPublishAttemptTimeout bounds one try of a publish.
	DefaultPublishAttemptTimeout = time.Second
	// DefaultPingInterval and DefaultMaxPingsOutstanding notice a frozen
	// server within about three seconds.
	DefaultPingInterval        = time.Second
	DefaultMaxPingsOutstanding = 2
	DefaultDuplicateWindow     = 2 * time.Minute
)

// Options configure a Queue. The zero value of a field selects its
// default; negative values are an error.
type Options struct {
	// URLs are the NATS servers, e.g. nats://nats-1:4222; the client
	// finds the rest of the cluster from them. At least one.
	URLs []string

	// Stream is the name of the work stream; the dead letters are in
	// Stream+"_DEAD" and the state records in Stream+"_STATE". Letters,
	// digits, '-' and '_'. Default: ATLAS_CALLBACKS.
	Stream string

	// Replicas is the number of servers holding each stream: 3 for a
	// cluster (the ack then means a quorum of 2 has the message), 1 for
	// a single server. Default: 3.
	Replicas int

	// Credentials: at most one of CredentialsFile (a NATS .creds file:
	// user JWT and nkey seed) or Credentials (its content), NKeySeedFile
	// (an nkey seed), or User and Password.
	CredentialsFile string
	// Credentials is the content of a .creds file, instead of its path.
	Credentials  string
	NKeySeedFile string
	User         string
	Password     string

	// TLS, if set, is the client TLS configuration (CA, client
	// certificate).
	TLS *tls.Config

	// Name is the NATS connection name shown by the servers. Default:
	// "caddy-atlas".
	Name string

	// AckWait is how long a delivery may go without a sign of life
	// before the servers hand it to another instance: an instance that
	// dies mid-delivery holds its callbacks up for that long. A live
	// delivery sends an "in progress" every AckWait/3, so DeliveryTimeout
	// may exceed it. Default: 10s.
	AckWait time.Duration

	// PublishTimeout bounds an Append (and the other writes): the wait
	// for the servers' ack, and within it the retries of a publish that
	// gets no answer from the stream (a leader election, a server
	// rejoining, a connection to a server gone silent), each try
	// bounded by PublishAttemptTimeout, against another server once the
	// client has moved. Only when it runs out is the callback refused
	// (queue.ErrUnavailable: the route answers 503 with Retry-After).
	// The callback id as the message id makes a retried publish safe.
	// Keep it below the route's request deadline and Atlas's timeout.
	// Default: 10s, which covers the 4 to 9 s nats-server takes to elect
	// a stream's new leader after the old one is lost.
	PublishTimeout time.Duration

	// PublishAttemptTimeout bounds one try of a publish within
	// PublishTimeout. Default: 1s.
	PublishAttemptTimeout time.Duration

	// PingInterval and MaxPingsOutstanding are how often the client pings
	// its server and how many pings may go unanswered before it drops
	// the connection and moves to another server: together, how soon a
	// frozen server (a long pause, a one-way partition) is noticed.
	// Default: 1s and 2, a frozen server noticed within about 3s.
	PingInterval        time.Duration
	MaxPingsOutstanding int

	// DuplicateWindow is the work stream's duplicate window (JetStream's
	// Nats-Msg-Id de-duplication), used when the stream is created.
	// Beyond it, the state records deduplicate. Default: 2m.
	DuplicateWindow time.Duration

	// Keyring, if set, seals each callback's headers and body before
	// they are published (AES-256-GCM, the callback id bound as
	// additional data), so that whoever reads the streams (a NATS
	// operator, a disk) cannot read payloads or move one to another id.
	// Messages sealed under a key the keyring lacks cannot be delivered
	// (each attempt fails, naming the key id); plaintext messages, from
	// before a keyring was set, are still delivered. It may change with
	// Reconfigure (a new sealing key first, the old ones after it).
	Keyring *seal.Keyring

	// Delivery, as for spool.Options: Deliver (nil: store, deliver
	// nothing until Reconfigure sets one), Retention (how long delivered
	// ids are remembered, default 7 days), MaxAttempts, BackoffMin and
	// BackoffMax, DeliveryTimeout, Concurrency (parallel deliveries of
	// this instance), Logger and Observer. Observer.FsyncDone reports
	// each acknowledged publish with appends 1.
	Deliver         queue.DeliverFunc
	Retention       time.Duration
	MaxAttempts     int
	BackoffMin      time.Duration
	BackoffMax      time.Duration
	DeliveryTimeout time.Duration
	Concurrency     int
	Logger          *zap.Logger
	Observer        queue.Observer
}

var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// config is a resolved Options; a Queue swaps the delivery part
// atomically.
type config struct {
	urls            []string
	stream          string
	replicas        int
	ackWait         time.Duration
	publishTimeout  time.Duration
	attemptTimeout  time.Duration
	dupWindow       time.Duration
	keyring         *seal.Keyring
	deliver         queue.DeliverFunc
	retention       time.Duration
	maxAttempts     int
	backoffMin      time.Duration
	backoffMax      time.Duration
	deliveryTimeout time.Duration
	concurrency     int
	logger          *zap.Logger
	obs             queue.Observer
	opts            Options
}

func resolve(o Options) (*config, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("jsqueue: no NATS server URL")
	}
	if o.Retention < 0 || o.BackoffMin < 0 || o.BackoffMax < 0 || o.DeliveryTimeout < 0 ||
		o.AckWait < 0 || o.PublishTimeout < 0 || o.DuplicateWindow < 0 {
		return nil, errors.New("jsqueue: negative duration in options")
	}
	if o.MaxAttempts < 0 || o.Concurrency < 0 || o.Replicas < 0 {
		return nil, errors.New("jsqueue: negative number in options")
	}
	c := &config{
		urls:            slices.Clone(o.URLs),
		stream:          orDefault(o.Stream, DefaultStream),
		replicas:        orDefault(o.Replicas, DefaultReplicas),
		ackWait:         orDefault(o.AckWait, DefaultAckWait),
		publishTimeout:  orDefault(o.PublishTimeout, DefaultPublishTimeout),
		attemptTimeout:  orDefault(o.PublishAttemptTimeout, DefaultPublishAttemptTimeout),
		dupWindow:       orDefault(o.DuplicateWindow, DefaultDuplicateWindow),
		keyring:         o.Keyring,
		deliver:         o.Deliver,
		retention:       orDefault(o.Retention, queue.DefaultRetention),
		maxAttempts:     orDefault(o.MaxAttempts, queue.DefaultMaxAttempts),
		backoffMin:      orDefault(o.BackoffMin, queue.DefaultBackoffMin),
		backoffMax:      orDefault(o.BackoffMax, queue.DefaultBackoffMax),
		deliveryTimeout: orDefault(o.DeliveryTimeout, queue.DefaultDeliveryTimeout),
		concurrency:     orDefault(o.Concurrency, queue.DefaultConcurrency),
		logger:          o.Logger,
		obs:             o.Observer,
		opts:            o,
	}
	if !streamName.MatchString(c.stream) {
		return nil, fmt.Errorf("jsqueue: stream name %q: want letters, digits, '-' and '_'", c.stream)
	}
	if c.replicas > 5 {
		return nil, fmt.Errorf("jsqueue: replicas %d: JetStream allows 1 to 5", c.replicas)
	}
	if c.backoffMin > c.backoffMax {
		return nil, errors.New("jsqueue: backoff min exceeds backoff max")
	}
	if c.retention < time.Second {
		return nil, errors.New("jsqueue: retention below 1s (JetStream message TTLs are in seconds)")
	}
	if c.ackWait < 100*time.Millisecond {
		return nil, errors.New("jsqueue: ack wait below 100ms")
	}
	n := 0
	if o.CredentialsFile != "" {
		n++
	}
	if o.Credentials != "" {
		n++
	}
	if o.NKeySeedFile != "" {
		n++
	}
	if o.User != "" || o.Password != "" {
		n++
	}
	if n > 1 {
		return nil, errors.New("jsqueue: more than one of credentials file, nkey seed file, user and password")
	}
	if c.logger == nil {
		c.logger = zap.NewNop()
	}
	if c.obs == nil {
		c.obs = queue.NopObserver{}
	}
	return c, nil
}

// sameConnection reports whether a and b connect to the same streams the
// same way, which Reconfigure cannot change.
func sameConnection(a, b *config) error {
	switch {
	case !slices.Equal(a.urls, b.urls):
		return errors.New("jsqueue: the NATS URLs of an open queue cannot change; open a new one")
	case a.stream != b.stream:
		return errors.New("jsqueue: the stream of an open queue cannot change; open a new one")
	case a.replicas != b.replicas:
		return errors.New("jsqueue: the replicas of an open queue cannot change; open a new one")
	case a.opts.CredentialsFile != b.opts.CredentialsFile || a.opts.Credentials != b.opts.Credentials || a.opts.NKeySeedFile != b.opts.NKeySeedFile ||
		a.opts.User != b.opts.User || a.opts.Password != b.opts.Password || a.opts.TLS != b.opts.TLS:
		return errors.New("jsqueue: the credentials of an open queue cannot change; open a new one")
	}
	return nil
}

// natsOptions are the connection options: reconnect for ever, and no
// reconnect buffer, so that a publish while disconnected fails at once
// (the route answers 503) rather than waiting for its ack timeout.
// onDisconnect and onReconnect are called as the connection drops and
// comes back.
func (c *config) natsOptions(onDisconnect, onReconnect func()) ([]nats.Option, error) {
	o := c.opts
	opts := []nats.Option{
		nats.Name(orDefault(o.Name, "caddy-atlas")),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		// The time to connect to one server; a publish's time is
		// publishTimeout.
		nats.Timeout(min(c.publishTimeout, 5*time.Second)),
		nats.PingInterval(orDefault(o.PingInterval, DefaultPingInterval)),
		nats.MaxPingsOutstanding(orDefault(o.MaxPingsOutstanding, DefaultMaxPingsOutstanding)),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			onDisconnect()
			c.logger.Warn("NATS connection lost", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			onReconnect()
			c.logger.Info("NATS connection restored", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
	}
	switch {
	case o.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	case o.Credentials != "":
		jwt, err := nkeys.ParseDecoratedJWT([]byte(o.Credentials))
		if err != nil {
			return nil, errors.New("jsqueue: credentials: no user JWT in them")
		}
		kp, err := nkeys.ParseDecoratedNKey([]byte(o.Credentials))
		if err != nil {
			return nil, errors.New("jsqueue: credentials: no nkey seed in them")
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, errors.New("jsqueue: credentials: the nkey is not a seed")
		}
		opts = append(opts, nats.UserJWTAndSeed(jwt, string(seed)))
	case o.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("jsqueue: nkey seed file: %w", err)
		}
		opts = append(opts, opt)
	case o.User != "" || o.Password != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.TLS != nil {
		opts = append(opts, nats.Secure(o.TLS.Clone()))
	}
	return opts, nil
}

func orDefault[T int | int64 | time.Duration | string](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
