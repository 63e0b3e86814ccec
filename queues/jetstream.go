package queues

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
	"github.com/caddy-atlas/caddy-atlas/internal/placeholder"
	"github.com/caddy-atlas/caddy-atlas/jsqueue"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

func init() {
	caddy.RegisterModule(JetStream{})
}

// JetStream is the `atlas.queues.jetstream` module: the durable queue on
// NATS JetStream, shared by a fleet of instances (see package jsqueue).
// Every instance configured with the same servers and stream appends to
// it and delivers from it; a redelivery of a callback to any of them is
// acknowledged as a duplicate; the admin API of any of them sees and acts
// on every callback. A callback is acknowledged once the JetStream
// servers acknowledged its publish (for R3, two of three hold it). If
// NATS cannot store it, Atlas is answered 503 with Retry-After.
// Placeholders ({env.*}, {file.*}) are resolved at provision time.
type JetStream struct {
	// The NATS servers, e.g. nats://nats-1:4222. At least one.
	URLs []string `json:"urls,omitempty"`
	// The work stream; its dead letters are in <stream>_DEAD and its
	// states in <stream>_STATE. Default: ATLAS_CALLBACKS.
	Stream string `json:"stream,omitempty"`
	// Servers holding each stream: 3 for a cluster, 1 for a single
	// server. Default: 3.
	Replicas int `json:"replicas,omitempty"`
	// How to authenticate; optional.
	Credentials *JetStreamCredentials `json:"credentials,omitempty"`
	// Client TLS; optional.
	TLS *JetStreamTLS `json:"tls,omitempty"`
	// How long a delivery may go without a sign of life before the
	// servers hand it to another instance: the takeover delay after an
	// instance dies. Live deliveries send a heartbeat every third of it.
	// Default: 10s.
	AckWait caddy.Duration `json:"ack_wait,omitempty"`
	// How long a callback's publish may take, retries included: a
	// publish that gets no answer from the stream (a leader election, a
	// server rejoining, a frozen server the client moves away from) is
	// tried again, each try at most 1s, before Atlas is answered 503
	// with Retry-After. Keep it below Atlas's timeout. Default: 10s,
	// which covers the 4 to 9 s nats-server takes to elect a stream's
	// new leader after the old one is lost.
	PublishTimeout caddy.Duration `json:"publish_timeout,omitempty"`

	Delivery

	name     string          // jetstream:<stream>
	key      string          // the pool's key: stream and servers
	base     jsqueue.Options // the connection part, resolved
	settings resolved
	keyring  *seal.Keyring
	logger   *zap.Logger
	pool     *poolRef
}

// JetStreamCredentials are the NATS credentials: one of Creds, NKey, or
// User and Password.
type JetStreamCredentials struct {
	// A NATS .creds file (user JWT and nkey seed): its path, or its
	// content, e.g. {file./etc/caddy/atlas.creds}.
	Creds string `json:"creds,omitempty"`
	// The path of an nkey seed file.
	NKey string `json:"nkey,omitempty"`
	// User and password.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
}

// JetStreamTLS is the client TLS configuration.
type JetStreamTLS struct {
	// PEM file of the CA certificates that sign the servers'; default:
	// the system's.
	CA string `json:"ca,omitempty"`
	// PEM files of a client certificate and its key.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
	// The name the servers' certificates must hold, if not the URL's
	// host.
	ServerName string `json:"server_name,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (JetStream) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "atlas.queues.jetstream",
		New: func() caddy.Module { return new(JetStream) },
	}
}

// Provision resolves the connection and the settings; the queue opens
// (and creates or checks its streams) when the config of the first route
// that uses it starts.
func (j *JetStream) Provision(ctx caddy.Context) error {
	j.logger = ctx.Logger()
	base, err := j.options()
	if err != nil {
		return err
	}
	j.base = base
	j.key = jetStreamKey(base)
	j.name = "jetstream:" + cmp.Or(base.Stream, jsqueue.DefaultStream)
	r, kr, err := j.Delivery.resolve()
	if err != nil {
		return fmt.Errorf("queue %s: %w", j.name, err)
	}
	j.settings, j.keyring = r, kr
	j.pool = &poolRef{metricsRegistry: ctx.GetMetricsRegistry()}
	registerJetStreamMetrics(ctx.GetMetricsRegistry())
	return nil
}

// Name names the queue: jetstream:<stream>.
func (j *JetStream) Name() string { return j.name }

// Attach adds u to the users of the queue, opening nothing (see
// queue.Backend).
func (j *JetStream) Attach(u *queue.User) error {
	if j.pool == nil {
		return errNotProvisioned
	}
	return j.pool.attach(j, u)
}

// Open opens the queue if no route has it open yet and makes u's
// delivery the one in effect (see queue.Backend).
func (j *JetStream) Open(u *queue.User) (queue.Store, error) {
	if j.pool == nil {
		return nil, errNotProvisioned
	}
	return j.pool.open(j, u)
}

// Detach stops u's use of the queue; the last user closes it.
func (j *JetStream) Detach(u *queue.User) error {
	if j.pool == nil {
		return nil
	}
	return j.pool.detach(j, u)
}

// poolKey names the queue in the pool: its stream and servers.
func (j *JetStream) poolKey() string { return j.key }

// jsStore is an open JetStream queue and the connection settings it was
// opened with.
type jsStore struct {
	*jsqueue.Queue
	conn jsConnection
}

// jsConnection are the settings of a JetStream queue that apply only
// when it opens.
type jsConnection struct {
	credentials *JetStreamCredentials
	tls         *JetStreamTLS
	replicas    int
}

// connection returns j's connection settings that apply only when the
// queue opens.
func (j *JetStream) connection() jsConnection {
	return jsConnection{credentials: j.Credentials, tls: j.TLS, replicas: j.Replicas}
}

// queueOptions are the queue options of j's settings with a's delivery,
// on j's connection.
func (j *JetStream) queueOptions(a attachment, transport http.RoundTripper) jsqueue.Options {
	o := j.base
	r := j.settings
	o.Deliver = a.u.Deliver(transport)
	o.Keyring = j.keyring
	o.Retention = r.retention
	o.MaxAttempts = r.maxAttempts
	o.BackoffMin = r.backoffMin
	o.BackoffMax = r.backoffMax
	o.DeliveryTimeout = r.deliveryTimeout
	o.Concurrency = r.concurrency
	o.Logger = j.logger.With(zap.String("queue", j.name))
	o.Observer = jetStreamObserver{observer{registerMetrics(nil)}, registerJetStreamMetrics(nil)}
	return o
}

// open connects to NATS and creates or checks the streams.
func (j *JetStream) open(a attachment, transport http.RoundTripper) (store, error) {
	q, err := jsqueue.Open(j.queueOptions(a, transport))
	if err != nil {
		return nil, err
	}
	j.logger.Info("jetstream queue open", zap.String("queue", j.name), zap.Strings("nats", j.base.URLs),
		zap.Int("concurrency", j.settings.concurrency), zap.Int("max_attempts", j.settings.maxAttempts),
		zap.Strings("encryption_key_ids", j.keyring.KeyIDs()))
	return &jsStore{Queue: q, conn: j.connection()}, nil
}

// reconfigure applies j's settings and a's delivery to the open queue.
// The connection's settings apply only when the queue opens.
func (j *JetStream) reconfigure(st store, a attachment, transport http.RoundTripper) error {
	js, ok := st.(*jsStore)
	if !ok {
		return fmt.Errorf("queue %s is not a JetStream queue", j.name)
	}
	if conn := j.connection(); !reflect.DeepEqual(conn, js.conn) {
		return fmt.Errorf("queue %s is open with other credentials, tls or replicas; those apply after a restart of Caddy (or on another stream)", j.name)
	}
	return js.Reconfigure(j.queueOptions(a, transport))
}

// differs returns the first setting o configures differently from j.
func (j *JetStream) differs(o backend) string {
	oj, ok := o.(*JetStream)
	switch {
	case !ok:
		return "backend"
	case !reflect.DeepEqual(oj.connection(), j.connection()):
		return "credentials, tls or replicas"
	case oj.base.AckWait != j.base.AckWait:
		return "ack_wait"
	case oj.base.PublishTimeout != j.base.PublishTimeout:
		return "publish_timeout"
	case oj.settings != j.settings:
		return "setting (max_attempts, retry_backoff, delivery_timeout, concurrency, retention or encryption_key)"
	}
	return ""
}

// maxBytes is 0: the streams' limits apply.
func (j *JetStream) maxBytes() int64 { return 0 }

// IsOpen reports whether the queue is open already (see queue.Backend).
func (j *JetStream) IsOpen() bool {
	_, ok := pool.References(j.poolKey())
	return ok
}

// Differs returns the first setting o configures differently if it
// names the same queue, "" otherwise (see queue.Backend).
func (j *JetStream) Differs(o queue.Backend) string {
	ob, ok := o.(backend)
	if !ok || ob.poolKey() != j.poolKey() {
		return ""
	}
	return j.differs(ob)
}

// log is the module's logger.
func (j *JetStream) log() *zap.Logger { return j.logger }

// encrypted reports whether the queue encrypts what it stores.
func (j *JetStream) encrypted() bool { return j.keyring != nil }

// options resolves the connection part of the options.
func (j *JetStream) options() (jsqueue.Options, error) {
	repl := caddy.NewReplacer()
	var o jsqueue.Options
	for _, u := range j.URLs {
		urls := strings.Fields(repl.ReplaceKnown(u, ""))
		if len(urls) == 0 && u != "" {
			return o, fmt.Errorf("queue jetstream: %w", placeholder.Empty("url", u))
		}
		o.URLs = append(o.URLs, urls...)
	}
	if len(o.URLs) == 0 {
		return o, errors.New("queue jetstream: url is required (an unset {env.*} placeholder?)")
	}
	for i, u := range o.URLs {
		// The errors never show the URL whole: it may hold a password.
		p, err := url.Parse(u)
		switch {
		case err != nil:
			return o, fmt.Errorf("queue jetstream: url %d is not a nats://host:port URL", i+1)
		case p.User != nil:
			return o, errors.New("queue jetstream: give credentials in the credentials block, not in the URL")
		case p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls" && p.Scheme != "ws" && p.Scheme != "wss"):
			return o, fmt.Errorf("queue jetstream: url %q is not a nats://host:port URL", p.Redacted())
		}
	}
	o.Stream = repl.ReplaceKnown(j.Stream, "")
	o.Replicas = j.Replicas
	o.AckWait = time.Duration(j.AckWait)
	o.PublishTimeout = time.Duration(j.PublishTimeout)
	if j.Replicas < 0 || j.Replicas > 5 {
		return o, fmt.Errorf("queue jetstream: replicas must be 1 to 5, got %d", j.Replicas)
	}
	if c := j.Credentials; c != nil {
		creds := repl.ReplaceKnown(c.Creds, "")
		if strings.Contains(creds, "-----BEGIN NATS USER JWT-----") {
			o.Credentials = creds
		} else {
			o.CredentialsFile = creds
		}
		o.NKeySeedFile = repl.ReplaceKnown(c.NKey, "")
		o.User = repl.ReplaceKnown(c.User, "")
		o.Password = repl.ReplaceKnown(c.Password, "")
		for _, s := range []struct{ name, raw, val string }{
			{"creds", c.Creds, creds}, {"nkey", c.NKey, o.NKeySeedFile},
			{"user", c.User, o.User}, {"password", c.Password, o.Password},
		} {
			if s.raw != "" && s.val == "" {
				return o, fmt.Errorf("queue jetstream: credentials %w", placeholder.Empty(s.name, s.raw))
			}
		}
	}
	if t := j.TLS; t != nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: repl.ReplaceKnown(t.ServerName, "")}
		if ca := repl.ReplaceKnown(t.CA, ""); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return o, fmt.Errorf("queue jetstream: tls ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return o, fmt.Errorf("queue jetstream: tls ca %s holds no PEM certificate", ca)
			}
		}
		cert, key := repl.ReplaceKnown(t.Cert, ""), repl.ReplaceKnown(t.Key, "")
		if (cert == "") != (key == "") {
			return o, errors.New("queue jetstream: tls needs both cert and key, or neither")
		}
		if cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return o, fmt.Errorf("queue jetstream: tls client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		o.TLS = cfg
	}
	return o, nil
}

// NATS is what another store of the queue's fleet (the ledger of
// batches) needs of a JetStream queue: its servers, stream and replicas,
// and a connection made as the queue's is.
type NATS struct {
	// Key names the servers and the stream: the queue's key in the pool.
	Key string
	// Stream is the queue's work stream, resolved.
	Stream string
	// Replicas is the queue's replicas, resolved.
	Replicas int

	opts jsqueue.Options
}

// NATS returns how to reach the queue's servers, connecting to nothing.
// Call it after Provision.
func (j *JetStream) NATS() NATS {
	return NATS{
		Key:      j.key,
		Stream:   cmp.Or(j.base.Stream, jsqueue.DefaultStream),
		Replicas: cmp.Or(j.base.Replicas, jsqueue.DefaultReplicas),
		opts:     j.base,
	}
}

// Connect connects to the queue's servers with its URLs, credentials
// and TLS, as name (the connection's name at the servers), logging its
// losses with logger; it waits for a server as the queue does when it
// opens. The connection is the caller's to close.
func (n NATS) Connect(name string, logger *zap.Logger) (*nats.Conn, error) {
	o := n.opts
	o.Name = name
	o.Logger = logger
	return jsqueue.Connect(o)
}

// jetStreamKey names a queue in the pool: the same stream on the same
// servers is one queue, whatever the credentials.
func jetStreamKey(o jsqueue.Options) string {
	urls := slices.Clone(o.URLs)
	slices.Sort(urls)
	return "jetstream:" + cmp.Or(o.Stream, jsqueue.DefaultStream) + " " + strings.Join(urls, ",")
}

// UnmarshalCaddyfile sets up the queue from the tokens of `queue
// jetstream` (d is on `jetstream`). Syntax:
//
//	queue jetstream {
//		url         <nats://host:port>...
//		stream      <name>
//		replicas    <n>
//		ack_wait    <duration>
//		publish_timeout <duration>
//		credentials <creds file or its content>
//		credentials {
//			creds    <creds file or its content>
//			nkey     <nkey seed file>
//			user     <user>
//			password <password>
//		}
//		tls {
//			ca          <PEM file>
//			cert        <PEM file>
//			key         <PEM file>
//			server_name <name>
//		}
//		max_attempts     <n>
//		retry_backoff    <first delay> <maximum delay>
//		delivery_timeout <duration>
//		concurrency      <n>
//		retention        <duration>
//		encryption_key   <key>          # repeatable: the first encrypts
//	}
func (j *JetStream) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the backend's name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := cfparse.Seen{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := j.UnmarshalDirective(d, seen); err != nil {
			return err
		}
	}
	if len(j.URLs) == 0 {
		return d.Err("queue jetstream: url is required")
	}
	return nil
}

// The subdirectives of a queue jetstream block and of its credentials
// and tls blocks, for the suggestion of a misspelt one (a test checks
// them against the parsers' switches).
var (
	jetStreamSubdirectives = append(deliveryNames(), "url", "stream", "replicas", "ack_wait", "publish_timeout",
		"dead_letter_retention", "purge_delay", "max_spool_size", "credentials", "tls")
	credentialsSubdirectives = []string{"creds", "nkey", "user", "password"}
	tlsSubdirectives         = []string{"ca", "cert", "key", "server_name"}
)

// UnmarshalDirective parses one subdirective of the queue's block, d on
// it; seen refuses a repeat.
func (j *JetStream) UnmarshalDirective(d *caddyfile.Dispenser, seen cfparse.Seen) error {
	name := d.Val()
	if DeliveryDirectives[name] {
		return j.Delivery.unmarshalDirective(d, seen)
	}
	if err := seen.Once(d); err != nil {
		return err
	}
	switch name {
	case "url":
		j.URLs = d.RemainingArgs()
		if len(j.URLs) == 0 {
			return d.ArgErr()
		}
		return nil
	case "stream":
		return cfparse.String(d, &j.Stream)
	case "replicas":
		return cfparse.Count(d, &j.Replicas, 1, 5)
	case "ack_wait":
		val, err := cfparse.Arg(d)
		if err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(val)
		if err != nil || dur < 100*time.Millisecond {
			return d.Errf("queue jetstream: ack_wait must be a duration of at least 100ms, got %s", val)
		}
		j.AckWait = caddy.Duration(dur)
		return nil
	case "publish_timeout":
		val, err := cfparse.Arg(d)
		if err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(val)
		if err != nil || dur < time.Second || dur > time.Minute {
			return d.Errf("queue jetstream: publish_timeout must be a duration from 1s to 1m, got %s", val)
		}
		j.PublishTimeout = caddy.Duration(dur)
		return nil
	case "dead_letter_retention":
		return d.Err("dead_letter_retention applies to a spool only: a queue jetstream keeps dead letters until they are retried or purged")
	case "purge_delay":
		return d.Err("purge_delay applies to a spool only: a queue jetstream deletes delivered messages itself")
	case "max_spool_size":
		return d.Err("max_spool_size applies to a spool only: the streams' limits bound a queue jetstream")
	case "credentials":
		return j.unmarshalCredentials(d)
	case "tls":
		return j.unmarshalTLS(d)
	}
	return cfparse.Unrecognized(d, jetStreamSubdirectives)
}

// unmarshalCredentials parses `credentials`, d on it.
func (j *JetStream) unmarshalCredentials(d *caddyfile.Dispenser) error {
	cr := &JetStreamCredentials{}
	if args := d.RemainingArgs(); len(args) == 1 {
		cr.Creds = args[0]
	} else if len(args) > 1 {
		return d.ArgErr()
	}
	for n := d.Nesting(); d.NextBlock(n); {
		var dst *string
		switch d.Val() {
		case "creds":
			dst = &cr.Creds
		case "nkey":
			dst = &cr.NKey
		case "user":
			dst = &cr.User
		case "password":
			dst = &cr.Password
		default:
			return d.Errf("queue jetstream credentials: unrecognized subdirective %q%s", d.Val(), cfparse.DidYouMean(d.Val(), credentialsSubdirectives))
		}
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
	}
	kinds := 0
	for _, v := range []string{cr.Creds, cr.NKey, cr.User + cr.Password} {
		if v != "" {
			kinds++
		}
	}
	if kinds != 1 {
		return d.Err("queue jetstream credentials: give one of creds, nkey, or user and password")
	}
	j.Credentials = cr
	return nil
}

// unmarshalTLS parses `tls { ... }`, d on it.
func (j *JetStream) unmarshalTLS(d *caddyfile.Dispenser) error {
	t := &JetStreamTLS{}
	if d.NextArg() {
		return d.ArgErr()
	}
	for n := d.Nesting(); d.NextBlock(n); {
		var dst *string
		switch d.Val() {
		case "ca":
			dst = &t.CA
		case "cert":
			dst = &t.Cert
		case "key":
			dst = &t.Key
		case "server_name":
			dst = &t.ServerName
		default:
			return d.Errf("queue jetstream tls: unrecognized subdirective %q%s", d.Val(), cfparse.DidYouMean(d.Val(), tlsSubdirectives))
		}
		if !d.AllArgs(dst) {
			return d.ArgErr()
		}
	}
	j.TLS = t
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*JetStream)(nil)
	_ caddyfile.Unmarshaler = (*JetStream)(nil)
	_ queue.Backend         = (*JetStream)(nil)
)
