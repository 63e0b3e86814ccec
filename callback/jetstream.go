package callback

import (
	"cmp"
	"context"
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
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/internal/metricsreg"
	"github.com/caddy-atlas/caddy-atlas/internal/outbound"
	"github.com/caddy-atlas/caddy-atlas/jsqueue"
	"github.com/caddy-atlas/caddy-atlas/mask"
	"github.com/caddy-atlas/caddy-atlas/queue"
)

// Queue selects a durable queue other than the local Spool.
type Queue struct {
	// JetStream is the queue on a NATS JetStream cluster, shared by a
	// fleet of instances (see package jsqueue).
	JetStream *JetStream `json:"jetstream,omitempty"`
}

// JetStream configures the durable queue on NATS JetStream. Every
// instance configured with the same servers and stream appends to it
// and delivers from it; a redelivery of a callback to any of them is
// acknowledged as a duplicate; the admin API of any of them sees and
// acts on every callback. Placeholders ({env.*}, {file.*}) are resolved
// at provision time.
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

// payloadMargin is what a callback's message adds to its body: the
// envelope with the callback's headers, the NATS headers, a seal.
const payloadMargin = 4 << 10

// jetStreams holds the open JetStream queues, shared like the spools:
// keyed by "jetstream:" + stream + servers; values are *sharedJetStream.
var jetStreams = caddy.NewUsagePool()

// sharedJetStream is an open JetStream queue in the usage pool.
type sharedJetStream struct {
	name      string // jetstream:<stream>, the queue's name in the admin API and metrics
	store     *jsqueue.Queue
	conf      JetStream       // as configured when opened
	base      jsqueue.Options // the connection part
	transport *http.Transport
	routes    queueRoutes
}

// jetStreamOptions resolves the connection part of the options.
func (j *JetStream) options() (jsqueue.Options, error) {
	repl := caddy.NewReplacer()
	var o jsqueue.Options
	for _, u := range j.URLs {
		o.URLs = append(o.URLs, strings.Fields(repl.ReplaceKnown(u, ""))...)
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
		if c.Creds != "" && creds == "" || c.User != "" && o.User == "" || c.NKey != "" && o.NKeySeedFile == "" {
			return o, errors.New("queue jetstream: credentials are empty (an unset {env.*} or unreadable {file.*} placeholder?)")
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

// jetStreamKey names a queue in the pool: the same stream on the same
// servers is one queue, whatever the credentials.
func jetStreamKey(o jsqueue.Options) string {
	urls := slices.Clone(o.URLs)
	slices.Sort(urls)
	return "jetstream:" + cmp.Or(o.Stream, jsqueue.DefaultStream) + " " + strings.Join(urls, ",")
}

// options are the queue options of c's settings: its delivery settings
// and ack wait, on the queue's connection.
func (s *sharedJetStream) options(c *Callback) jsqueue.Options {
	o := s.base
	o.AckWait = c.jsAckWait
	o.Deliver = c.deliverFunc(s.transport)
	o.Keyring = c.keyring
	o.Retention = c.durable.retention
	o.MaxAttempts = c.durable.maxAttempts
	o.BackoffMin = c.durable.backoffMin
	o.BackoffMax = c.durable.backoffMax
	o.DeliveryTimeout = c.durable.deliveryTimeout
	o.Concurrency = c.durable.concurrency
	o.Logger = c.logger.Named("jetstream").With(zap.String("queue", s.name))
	o.Observer = jetStreamObserver{spoolObserver{registerSpoolMetrics(nil)}, registerJetStreamMetrics(nil)}
	return o
}

// masker returns the masker of the route whose settings are in effect.
func (s *sharedJetStream) masker() *mask.Masker { return s.routes.masker() }

// attach adds c to the routes using the queue and applies its settings,
// as for a spool.
func (s *sharedJetStream) attach(c *Callback) error {
	if !reflect.DeepEqual(c.Queue.JetStream.Credentials, s.conf.Credentials) || !reflect.DeepEqual(c.Queue.JetStream.TLS, s.conf.TLS) ||
		c.Queue.JetStream.Replicas != s.conf.Replicas {
		return fmt.Errorf("queue %s is open with other credentials, tls or replicas; those apply after a restart of Caddy (or on another stream)", s.name)
	}
	return s.routes.add(c, func(o *Callback) error {
		if c.configKey != nil && o.configKey == c.configKey && (!sameDelivery(o, c) || o.jsAckWait != c.jsAckWait) {
			return fmt.Errorf("queue %s is also used by the callback route %s of this config with other delivery settings; give each route its own stream, or the same settings", s.name, o.Path)
		}
		return nil
	}, func(c *Callback) error { return s.store.Reconfigure(s.options(c)) })
}

// detach removes c; the settings of the last remaining route apply.
func (s *sharedJetStream) detach(c *Callback) {
	s.routes.remove(c, func(last *Callback) {
		if err := s.store.Reconfigure(s.options(last)); err != nil {
			last.logger.Error("restoring the queue settings", zap.String("queue", s.name), zap.Error(err))
		}
	})
}

// Destruct closes the queue when the last config using it is unloaded:
// deliveries in progress get spoolDrainTimeout, then are handed back to
// the servers for another instance.
func (s *sharedJetStream) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), spoolDrainTimeout)
	defer cancel()
	err := s.store.Close(ctx)
	s.transport.CloseIdleConnections()
	return err
}

// provisionJetStream takes the route's JetStream queue from the pool,
// opening it (and creating or checking its streams) on first use.
func (c *Callback) provisionJetStream() error {
	base, err := c.Queue.JetStream.options()
	if err != nil {
		return err
	}
	c.jsAckWait = base.AckWait
	key := jetStreamKey(base)
	name := "jetstream:" + cmp.Or(base.Stream, jsqueue.DefaultStream)
	val, _, err := jetStreams.LoadOrNew(key, func() (caddy.Destructor, error) {
		s := &sharedJetStream{name: name, conf: *c.Queue.JetStream, base: base, transport: outbound.NewTransport()}
		st, err := jsqueue.Open(s.options(c))
		if err != nil {
			return nil, err
		}
		s.store = st
		return s, nil
	})
	if err != nil {
		return fmt.Errorf("opening queue %s: %w", name, err)
	}
	c.jetStreamKey = key
	shared := val.(*sharedJetStream)
	if err := shared.attach(c); err != nil {
		return err
	}
	c.sharedJS = shared
	c.store = shared.store
	c.queueName = shared.name
	if mp := shared.store.MaxPayload(); c.MaxBody+payloadMargin > mp {
		c.logger.Warn("the NATS servers' max_payload is below max_body: larger callbacks will be refused; raise max_payload (up to 64MB) or lower max_body",
			zap.Int64("max_payload", mp), zap.Int64("max_body", c.MaxBody))
	}
	u, _ := url.Parse(c.durable.deliverTo)
	c.logger.Info("callback route in durable mode", zap.String("queue", shared.name),
		zap.Strings("nats", base.URLs), zap.String("deliver_to", u.Redacted()),
		zap.Int("concurrency", c.Concurrency), zap.Int("max_attempts", c.MaxAttempts),
		zap.Strings("encryption_key_ids", c.keyring.KeyIDs()))
	if c.keyring == nil {
		c.logger.Warn("durable mode without encryption_key: payloads are stored unencrypted",
			zap.String("queue", shared.name))
	}
	return nil
}

// cleanupJetStream releases the route's queue; the last route using it
// closes it.
func (c *Callback) cleanupJetStream() error {
	if c.sharedJS != nil {
		c.sharedJS.detach(c)
		c.sharedJS = nil
	}
	if c.jetStreamKey == "" {
		return nil
	}
	key := c.jetStreamKey
	c.jetStreamKey = ""
	_, err := jetStreams.Delete(key)
	return err
}

// liveJetStreams returns the open JetStream queues, sorted by name.
func liveJetStreams() []*sharedJetStream {
	var out []*sharedJetStream
	jetStreams.Range(func(_, v any) bool {
		if s, ok := v.(*sharedJetStream); ok && s != nil {
			out = append(out, s)
		}
		return true
	})
	slices.SortFunc(out, func(a, b *sharedJetStream) int { return strings.Compare(a.name, b.name) })
	return out
}

// jetStreamMetrics is the collector of the JetStream backend:
//
//	caddy_atlas_jetstream_publish_seconds   time from publish to the servers' ack of a callback
//
// The delivery metrics (attempts, duration, dead letters) are the
// spool's, and the queue's gauges are the spool gauges with the queue's
// name, jetstream:<stream>, as the spool label.
type jetStreamMetrics struct {
	publishSeconds prometheus.Histogram
}

var (
	jetStreamMetricsOnce sync.Once
	jetStreamCollectors  *jetStreamMetrics
)

func registerJetStreamMetrics(registry *prometheus.Registry) *jetStreamMetrics {
	jetStreamMetricsOnce.Do(func() {
		jetStreamCollectors = &jetStreamMetrics{
			publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Namespace: metricsreg.Namespace, Subsystem: metricsreg.Subsystem, Name: "jetstream_publish_seconds",
				Help:    "Time from the publish of a callback to the JetStream servers' ack.",
				Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
			}),
		}
	})
	metricsreg.Register(registry, jetStreamCollectors.publishSeconds)
	return jetStreamCollectors
}

// jetStreamObserver feeds a JetStream queue's events into the metrics:
// the delivery ones as for a spool, the publish acks into their own
// histogram (they are no fsyncs).
type jetStreamObserver struct {
	spoolObserver
	js *jetStreamMetrics
}

// FsyncDone implements queue.Observer: for this backend, an ack.
func (o jetStreamObserver) FsyncDone(d time.Duration, _ int) {
	o.js.publishSeconds.Observe(d.Seconds())
}

// Interface guards
var (
	_ caddy.Destructor = (*sharedJetStream)(nil)
	_ queue.Observer   = jetStreamObserver{}
)
