package jsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
)

// Queue is a queue.Store on NATS JetStream, shared by every instance
// that opens it with the same stream: each of them appends, delivers,
// and answers the operator's queries from the streams, so any instance
// sees and acts on every callback.
type Queue struct {
	cfg  atomic.Pointer[config]
	nc   *nats.Conn
	js   jetstream.JetStream
	work jetstream.Stream
	dead jetstream.Stream
	st   jetstream.Stream
	cons jetstream.Consumer
	// delivered and deadCount count the delivered and dead records (see
	// countingConsumer).
	delivered, deadCount jetstream.Consumer
	// lastStats is the last complete Stats read from the servers.
	lastStats atomic.Pointer[queue.Stats]
	// disconnectedAt is when the connection dropped, in Unix
	// nanoseconds; 0 while connected.
	disconnectedAt atomic.Int64

	workSubj, deadSubj, stateSubj string

	mu       sync.Mutex
	inflight map[uint64]string // work sequence -> id, deliveries of this instance
	closing  bool

	kickc         chan struct{}
	stop          chan struct{}
	deliverCtx    context.Context
	deliverCancel context.CancelFunc
	fetchCtx      context.Context
	fetchCancel   context.CancelFunc
	fetcher       sync.WaitGroup
	deliveries    sync.WaitGroup
	closed        chan struct{}
}

var _ queue.Store = (*Queue)(nil)

// Open connects to NATS, creates the three streams and the delivery
// consumer if they do not exist, or checks that they match opts if they
// do, and starts delivering. A stream that exists with other replicas,
// retention or limits is an error naming the field; Open never changes
// an existing stream. While no server answers (NATS not up yet, a
// cluster electing its leaders), Open tries again, logging the reason at
// warn level, for up to six publish timeouts (at most 30 s); then it fails with an
// error wrapping queue.ErrUnavailable. What can never work (credentials
// refused, replicas the servers cannot hold, a stream that differs)
// fails at once, saying what to change.
func Open(opts Options) (*Queue, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	q := &Queue{
		workSubj:  cfg.stream + ".q.",
		deadSubj:  cfg.stream + "_DEAD.",
		stateSubj: cfg.stream + "_STATE.",
		inflight:  make(map[uint64]string),
		kickc:     make(chan struct{}, 1),
		stop:      make(chan struct{}),
		closed:    make(chan struct{}),
	}
	nopts, err := cfg.natsOptions(
		func() { q.disconnectedAt.Store(time.Now().UnixNano()) },
		func() { q.disconnectedAt.Store(0) })
	if err != nil {
		return nil, err
	}
	// While no server answers, Open waits up to six publish timeouts,
	// at most 30 s.
	deadline := time.Now().Add(min(6*cfg.publishTimeout, 30*time.Second))
	nc, err := connect(cfg, nopts, deadline)
	if err != nil {
		return nil, err
	}
	q.nc = nc
	q.cfg.Store(cfg)
	if q.js, err = jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.publishTimeout)); err != nil {
		nc.Close()
		return nil, err
	}
	if err := q.setupWithRetry(cfg, deadline); err != nil {
		nc.Close()
		return nil, err
	}
	q.deliverCtx, q.deliverCancel = context.WithCancel(context.Background())
	q.fetchCtx, q.fetchCancel = context.WithCancel(context.Background())
	q.fetcher.Add(1)
	go q.fetch()
	cfg.logger.Info("jetstream queue opened", zap.String("stream", cfg.stream), zap.Int("replicas", cfg.replicas),
		zap.String("server", nc.ConnectedUrlRedacted()))
	return q, nil
}

// connect connects to NATS, trying again until deadline while no server
// can be reached; credentials the servers refuse fail at once.
func connect(cfg *config, nopts []nats.Option, deadline time.Time) (*nats.Conn, error) {
	var logged time.Time
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(joinURLs(cfg.urls), nopts...)
		switch {
		case err == nil:
			return nc, nil
		case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
			return nil, fmt.Errorf("jsqueue: connecting to NATS: %w: check the queue's credentials", err)
		case time.Now().After(deadline):
			return nil, fmt.Errorf("%w: connecting to NATS: %w", queue.ErrUnavailable, err)
		}
		if now := time.Now(); now.Sub(logged) >= setupRetryLogEvery {
			logged = now
			cfg.logger.Warn("jetstream queue: cannot connect to NATS yet; trying again",
				zap.Error(err), zap.Int("attempt", attempt), zap.Duration("giving_up_in", time.Until(deadline).Round(time.Second)))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func joinURLs(urls []string) string {
	s := ""
	for i, u := range urls {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}

// streamConfigs returns the configurations of the work, dead-letter and
// state streams.
func (q *Queue) streamConfigs(cfg *config) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{{
		Name:        cfg.stream,
		Description: "caddy-atlas: callbacks to deliver",
		Subjects:    []string{q.workSubj + "*"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.replicas,
		Duplicates:  min(cfg.dupWindow, cfg.retention),
		Discard:     jetstream.DiscardNew,
	}, {
		Name:              cfg.stream + "_DEAD",
		Description:       "caddy-atlas: dead letters, kept until retried or purged",
		Subjects:          []string{q.deadSubj + "*"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.replicas,
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardNew,
	}, {
		Name:              cfg.stream + "_STATE",
		Description:       "caddy-atlas: callback states (attempts, dead, delivered ids for the retention window)",
		Subjects:          []string{q.stateSubj + "*.*"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.replicas,
		MaxMsgsPerSubject: 1,
		AllowMsgTTL:       true,
		Discard:           jetstream.DiscardNew,
	}}
}

// setupRetryLogEvery is how often at most a retry of the setup is
// logged.
const setupRetryLogEvery = 5 * time.Second

// setupWithRetry runs setup, each attempt bounded by twice the publish
// timeout, again while it fails for want of an answer (a cluster just
// formed, or electing the leader of a stream, may leave a request
// unanswered), until deadline, logging the
// reason at warn level (at most every setupRetryLogEvery). Setup is
// idempotent. A configuration error (a stream that differs, replicas the
// servers can never hold) is returned at once.
func (q *Queue) setupWithRetry(cfg *config, deadline time.Time) error {
	var logged time.Time
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), max(min(2*cfg.publishTimeout, time.Until(deadline)), time.Second))
		err := q.setup(ctx, cfg)
		cancel()
		if err == nil || !errors.Is(err, queue.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		if now := time.Now(); now.Sub(logged) >= setupRetryLogEvery {
			logged = now
			cfg.logger.Warn("jetstream queue: the servers cannot set up the streams yet; trying again",
				zap.Error(err), zap.Int("attempt", attempt), zap.Duration("giving_up_in", time.Until(deadline).Round(time.Second)))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// JetStream API error codes (nats-server's jetstream_errors_generated.go)
// of a stream the servers can never hold as configured.
const (
	jsClusterNotActive           jetstream.ErrorCode = 10006 // JSClusterNotActiveErr
	jsInsufficientResources      jetstream.ErrorCode = 10023 // JSInsufficientResourcesErr
	jsStreamReplicasNotSupported jetstream.ErrorCode = 10074 // JSStreamReplicasNotSupportedErr
	jsClusterNoPeers             jetstream.ErrorCode = 10005 // JSClusterNoPeersErrF
)

// setupError returns the error of what setup asked of the servers: if
// it can never succeed as configured, a configuration error that says
// what to change; otherwise an error wrapping queue.ErrUnavailable, for
// a retry.
func setupError(what string, replicas int, err error) error {
	var apiErr interface{ APIError() *jetstream.APIError }
	code := jetstream.ErrorCode(0)
	if errors.As(err, &apiErr) && apiErr.APIError() != nil {
		code = apiErr.APIError().ErrorCode
	}
	switch code {
	case jsStreamReplicasNotSupported, jsClusterNotActive:
		return fmt.Errorf("jsqueue: %s: replicas %d needs a cluster of at least %d JetStream servers; this NATS server is not clustered: set replicas 1 (%w)",
			what, replicas, replicas, err)
	case jsInsufficientResources:
		return fmt.Errorf("jsqueue: %s: the NATS servers lack the resources for it (%w): replicas %d needs as many JetStream servers in the cluster, each with room for the stream: lower replicas to the number of servers, or give them more storage (max_file_store)",
			what, err, replicas)
	case jsClusterNoPeers:
		return fmt.Errorf("%w: %s: %w; replicas %d needs %d JetStream servers up in the NATS cluster", queue.ErrUnavailable, what, err, replicas, replicas)
	}
	return fmt.Errorf("%w: %s: %w", queue.ErrUnavailable, what, err)
}

func (q *Queue) setup(ctx context.Context, cfg *config) error {
	var streams []jetstream.Stream
	for _, want := range q.streamConfigs(cfg) {
		s, err := q.js.Stream(ctx, want.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			s, err = q.js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// Another instance created it meanwhile.
				s, err = q.js.Stream(ctx, want.Name)
			}
			if err != nil {
				return setupError("creating stream "+want.Name, want.Replicas, err)
			}
			cfg.logger.Info("jetstream stream created", zap.String("stream", want.Name), zap.Int("replicas", want.Replicas))
		case err != nil:
			return fmt.Errorf("%w: stream %s: %w", queue.ErrUnavailable, want.Name, err)
		}
		if err := checkStream(want, s.CachedInfo().Config); err != nil {
			return err
		}
		streams = append(streams, s)
	}
	q.work, q.dead, q.st = streams[0], streams[1], streams[2]
	cons, err := q.work.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       "deliver",
		Description:   "caddy-atlas: delivery, shared by every instance",
		FilterSubject: q.workSubj + "*",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: -1,
	})
	if err != nil {
		return setupError("delivery consumer on "+cfg.stream, cfg.replicas, err)
	}
	q.cons = cons
	if err := q.countingConsumer(ctx); err != nil {
		return setupError("counting consumer on "+cfg.stream+"_STATE", cfg.replicas, err)
	}
	return nil
}

// countingConsumer creates (or finds) a consumer that is never pulled
// from: its pending count is the number of delivered records, kept by
// the servers as records come and expire.
func (q *Queue) countingConsumer(ctx context.Context) error {
	var cs [2]jetstream.Consumer
	for i, k := range []struct{ name, kind, what string }{
		{"count-delivered", kindDelivered, "delivered callbacks within the retention window"},
		{"count-dead", kindDead, "dead callbacks"},
	} {
		c, err := q.st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       k.name,
			Description:   "caddy-atlas: counts " + k.what + "; never pulled",
			FilterSubject: q.stateSubj + k.kind + ".*",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckNonePolicy,
		})
		if err != nil {
			return err
		}
		cs[i] = c
	}
	q.mu.Lock()
	q.delivered, q.deadCount = cs[0], cs[1]
	q.mu.Unlock()
	return nil
}

// checkStream reports the first setting of an existing stream that
// differs from the one this configuration needs.
func checkStream(want, got jetstream.StreamConfig) error {
	diff := func(field string, w, g any) error {
		return fmt.Errorf("jsqueue: stream %s exists with %s %v, the configuration wants %v; "+
			"change the stream (nats stream edit) or the configuration, it is not changed for you", want.Name, field, g, w)
	}
	switch {
	case got.Replicas != want.Replicas:
		return diff("replicas", want.Replicas, got.Replicas)
	case got.Retention != want.Retention:
		return diff("retention", want.Retention, got.Retention)
	case !slices.Equal(got.Subjects, want.Subjects):
		return diff("subjects", want.Subjects, got.Subjects)
	case got.Storage != want.Storage:
		return diff("storage", want.Storage, got.Storage)
	case got.MaxMsgsPerSubject != want.MaxMsgsPerSubject && want.MaxMsgsPerSubject != 0:
		return diff("max_msgs_per_subject", want.MaxMsgsPerSubject, got.MaxMsgsPerSubject)
	case got.AllowMsgTTL != want.AllowMsgTTL:
		return diff("allow_msg_ttl", want.AllowMsgTTL, got.AllowMsgTTL)
	case got.MaxAge != 0:
		return diff("max_age", time.Duration(0), got.MaxAge)
	}
	return nil
}

func (q *Queue) config() *config { return q.cfg.Load() }

// MaxPayload returns the largest message the connected server takes
// (its max_payload): an entry whose body and headers come near it is
// refused by Append with queue.ErrTooLarge.
func (q *Queue) MaxPayload() int64 { return q.nc.MaxPayload() }

// Reconfigure applies new delivery options (Deliver, Retention,
// MaxAttempts, backoff, DeliveryTimeout, Concurrency, Logger, Observer,
// AckWait for the next deliveries) to an open queue. The connection
// settings (URLs, Stream, Replicas, credentials, TLS) cannot change: it
// returns an error if they differ.
func (q *Queue) Reconfigure(opts Options) error {
	cfg, err := resolve(opts)
	if err != nil {
		return err
	}
	if err := sameConnection(q.config(), cfg); err != nil {
		return err
	}
	if cfg.ackWait != q.config().ackWait {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.publishTimeout)
		defer cancel()
		ci := q.cons.CachedInfo().Config
		ci.AckWait = cfg.ackWait
		if _, err := q.work.UpdateConsumer(ctx, ci); err != nil {
			return fmt.Errorf("jsqueue: updating the ack wait: %w", err)
		}
	}
	q.cfg.Store(cfg)
	q.kick()
	return nil
}

func (q *Queue) kick() {
	select {
	case q.kickc <- struct{}{}:
	default:
	}
}

// errNoAnswer is the cause of an operation's own timeout: NATS did not
// answer in time.
var errNoAnswer = errors.New("no answer from NATS in time")

// withTimeout bounds an operation on NATS, with errNoAnswer as the cause.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, errNoAnswer)
}

// unavailable wraps a NATS error as queue.ErrUnavailable, except the
// caller's own cancellation or deadline, returned as it is.
func unavailable(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errNoAnswer) {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %s: %w", queue.ErrUnavailable, what, err)
}

func isWrongLastSeq(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) &&
		(ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// state returns the newest state record of id, nil if it has none.
func (q *Queue) state(ctx context.Context, id string) (*record, error) {
	m, err := q.st.GetLastMsgForSubject(ctx, q.stateSubj+"*."+subjectKey(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeRecord(m.Subject, m.Sequence, m.Data)
}

// pendingMsg returns the message of id in the work stream, nil if there
// is none.
func (q *Queue) pendingMsg(ctx context.Context, id string) (*jetstream.RawStreamMsg, error) {
	m, err := q.work.GetLastMsgForSubject(ctx, q.workSubj+subjectKey(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	return m, err
}

// putState writes r as the newest state of its callback, if the newest
// is still the one at sequence base (0: none); ttl 0 keeps it until it
// is replaced. It returns false if another state was written meanwhile.
func (q *Queue) putState(ctx context.Context, kind string, r *record, base uint64, ttl time.Duration) (bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	key := subjectKey(r.ID)
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequenceForSubject(base, q.stateSubj+"*."+key)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl.Round(time.Second)))
	}
	_, err = q.js.Publish(ctx, q.stateSubj+kind+"."+key, data, opts...)
	if isWrongLastSeq(err) {
		return false, nil
	}
	return err == nil, err
}

// purgeState removes the state records of id of the given kinds.
func (q *Queue) purgeState(ctx context.Context, id string, kinds ...string) error {
	for _, k := range kinds {
		if err := q.st.Purge(ctx, jetstream.WithPurgeSubject(q.stateSubj+k+"."+subjectKey(id))); err != nil {
			return err
		}
	}
	return nil
}

// Append implements queue.Store. It returns once the work stream's
// servers acknowledged the message (a quorum of them for R3), with an
// error wrapping queue.ErrUnavailable if NATS is unreachable or the ack
// does not come within PublishTimeout. The callback id is the
// Nats-Msg-Id; the publish also expects no message of that id in the
// work stream, and a state record of the id (dead, or delivered within
// the retention window) makes it a duplicate before publishing.
func (q *Queue) Append(ctx context.Context, e queue.Entry) (queue.AppendResult, error) {
	res := queue.AppendResult{ID: e.ID}
	if err := validateEntry(&e); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	cfg := q.config()
	if q.isClosing() {
		return res, queue.ErrClosed
	}
	if e.Received.IsZero() {
		e.Received = time.Now()
	}
	if n, max := envelopeSize(e.Header, e.Body)+512, q.nc.MaxPayload(); max > 0 && int64(n) > max {
		return res, fmt.Errorf("%w: body of %d bytes, and the NATS servers' max_payload is %d", queue.ErrTooLarge, len(e.Body), max)
	}
	ctx, cancel := withTimeout(ctx, cfg.publishTimeout)
	defer cancel()
	// A try that gets no answer from the stream is tried again, until
	// the publish timeout: a leader election, a server rejoining or a
	// connection to a frozen server (which the client's pings notice, to
	// move to another) last seconds, and Atlas should not be refused
	// while a quorum stands.
	published := false // an earlier try sent the message; its ack may be lost
	for attempt := 1; ; attempt++ {
		actx, acancel := withTimeout(ctx, cfg.attemptTimeout)
		res, what, err := q.appendOnce(actx, e, cfg)
		acancel()
		if err == nil {
			if published {
				// The duplicate is likely this Append's own earlier
				// try, whose ack was lost: it was stored, once.
				res.Duplicate = false
			}
			return res, nil
		}
		if what == "publishing the callback" {
			published = true
		}
		if !retryable(err) || ctx.Err() != nil || q.offline() {
			if what == "" {
				return res, err
			}
			return res, unavailable(ctx, what, err)
		}
		wait := min(25*time.Millisecond<<min(attempt, 5), 500*time.Millisecond)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait+10*time.Millisecond {
			return res, unavailable(ctx, what, err)
		}
		cfg.logger.Debug("retrying a publish that got no answer", zap.String("callback_id", e.ID),
			zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return res, unavailable(ctx, what, err)
		case <-time.After(wait):
		}
	}
}

// reconnectGrace is how long a dropped connection may take to come back
// (to the same server or another) before an Append stops waiting for
// it: beyond it, NATS is taken to be down, and the callback is refused
// at once rather than at the end of the publish timeout.
const reconnectGrace = time.Second

// offline reports whether the connection has been down for longer than
// reconnectGrace.
func (q *Queue) offline() bool {
	at := q.disconnectedAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) > reconnectGrace
}

// retryable reports whether a try of an Append failed for want of an
// answer, which another try may get: no responders (no stream leader),
// no response in the try's time, a connection between servers, a
// JetStream API error with status 503, or an earlier try of the same
// message still being stored.
func retryable(err error) bool {
	var ae *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrReconnectBufExceeded), // the client reconnects, and buffers nothing
		errors.Is(err, nats.ErrStaleConnection), errors.Is(err, errNoAnswer):
		return true
	case errors.As(err, &ae):
		return ae.Code == 503 || ae.ErrorCode == jsErrDuplicateMessageInProcess
	}
	return false
}

// jsErrDuplicateMessageInProcess is the servers' JSStreamDuplicateMessageConflict
// (409, "duplicate message id is in process"): a publish with the same
// message id, an earlier try whose answer was lost, is still being
// stored (seen from a node cut off from its peers). The next try finds
// it stored, a duplicate, or stores it.
const jsErrDuplicateMessageInProcess jetstream.ErrorCode = 10158

// appendOnce is one try of Append within ctx. On failure, what says
// what failed ("" for an error to return as it is).
func (q *Queue) appendOnce(ctx context.Context, e queue.Entry, cfg *config) (queue.AppendResult, string, error) {
	res := queue.AppendResult{ID: e.ID}
	rec, err := q.state(ctx, e.ID)
	if err != nil {
		return res, "reading callback state", err
	}
	msgID := e.ID
	if rec != nil {
		if rec.kind != kindDeleted {
			res.Duplicate = true
			return res, "", nil
		}
		// Deleted: JetStream may still hold the id in its duplicate
		// window, so the new message gets an id of its own, the same for
		// every instance that sees this deletion.
		msgID = e.ID + "~" + strconv.FormatUint(rec.rseq, 10)
	}
	m := q.newMsg(q.workSubj+subjectKey(e.ID), e.ID, e.Received, e.Header, e.Body)
	start := time.Now()
	ack, err := q.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID), jetstream.WithExpectLastSequencePerSubject(0))
	switch {
	case isWrongLastSeq(err):
		res.Duplicate = true // pending in the work stream
		return res, "", nil
	case errors.Is(err, nats.ErrMaxPayload):
		// A server with a lower max_payload than the one connected to
		// first: retrying will not help.
		return res, "", fmt.Errorf("%w: %w", queue.ErrTooLarge, err)
	case err != nil:
		return res, "publishing the callback", err
	}
	cfg.obs.FsyncDone(time.Since(start), 1)
	res.Duplicate = ack.Duplicate
	return res, "", nil
}

// newMsg makes a work or dead-letter message.
func (q *Queue) newMsg(subject, id string, received time.Time, h map[string][]string, body []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(hdrID, id)
	m.Header.Set(hdrReceived, strconv.FormatInt(received.UnixNano(), 10))
	m.Header.Set(hdrSize, strconv.Itoa(len(body)))
	env := appendEnvelope(make([]byte, 0, envelopeSize(h, body)+seal.Overhead), h, body)
	if kr := q.config().keyring; kr != nil {
		m.Header.Set(hdrSealed, "1")
		env = kr.Seal(env[:0], env, []byte(id))
	}
	m.Data = env
	return m
}

func (q *Queue) isClosing() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closing
}

// opCtx bounds an operation of an interface method without a context.
func (q *Queue) opCtx() (context.Context, context.CancelFunc) {
	return withTimeout(context.Background(), q.config().publishTimeout)
}

// lookup returns the Info of id and, for a pending one, its message.
func (q *Queue) lookup(ctx context.Context, id string) (queue.Info, *jetstream.RawStreamMsg, error) {
	rec, err := q.state(ctx, id)
	if err != nil {
		return queue.Info{}, nil, err
	}
	if rec != nil && (rec.kind == kindDead || rec.kind == kindDelivered) {
		return rec.info(), nil, nil
	}
	m, err := q.pendingMsg(ctx, id)
	if err != nil || m == nil {
		return queue.Info{}, nil, err
	}
	in := queue.Info{State: queue.StatePending}
	in.ID, in.Received, in.Size = msgInfo(m.Header)
	in.NextAttempt = in.Received
	if rec != nil && rec.kind == kindPending && rec.Seq == m.Sequence {
		in.Attempts, in.LastError, in.LastAttempt, in.NextAttempt = rec.Attempts, rec.LastError, rec.LastAttempt, rec.NextAttempt
	}
	q.mu.Lock()
	_, in.InFlight = q.inflight[m.Sequence]
	q.mu.Unlock()
	return in, m, nil
}

// Get implements queue.Store. InFlight is true only for a delivery by
// this instance.
func (q *Queue) Get(id string) (queue.Info, bool) {
	ctx, cancel := q.opCtx()
	defer cancel()
	in, _, err := q.lookup(ctx, id)
	if err != nil {
		q.config().logger.Warn("jetstream queue: reading a callback", zap.String("callback_id", id), zap.Error(err))
		return queue.Info{}, false
	}
	return in, in.ID != ""
}

// Load implements queue.Store.
func (q *Queue) Load(ctx context.Context, id string) (queue.Entry, error) {
	if err := ctx.Err(); err != nil {
		return queue.Entry{}, err
	}
	if q.isClosing() {
		return queue.Entry{}, queue.ErrClosed
	}
	ctx, cancel := withTimeout(ctx, q.config().publishTimeout)
	defer cancel()
	in, m, err := q.lookup(ctx, id)
	if err != nil {
		return queue.Entry{}, unavailable(ctx, "reading callback", err)
	}
	switch in.State {
	case queue.StateDelivered:
		return queue.Entry{}, queue.ErrDelivered
	case queue.StateDead:
		if m, err = q.dead.GetLastMsgForSubject(ctx, q.deadSubj+subjectKey(id)); err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return queue.Entry{}, queue.ErrNotFound
			}
			return queue.Entry{}, unavailable(ctx, "reading dead letter", err)
		}
	case queue.AnyState:
		return queue.Entry{}, queue.ErrNotFound
	}
	return q.entry(m.Header, m.Data)
}

// entry decodes a work or dead-letter message.
func (q *Queue) entry(h nats.Header, data []byte) (queue.Entry, error) {
	id, received, _ := msgInfo(h)
	if h.Get(hdrSealed) != "" {
		var err error
		if data, err = q.config().keyring.Open(nil, data, []byte(id)); err != nil {
			return queue.Entry{}, fmt.Errorf("callback %s: %w", id, err)
		}
	}
	hdr, body, err := decodeEnvelope(data)
	if err != nil {
		return queue.Entry{}, fmt.Errorf("callback %s: %w", id, err)
	}
	return queue.Entry{ID: id, Header: hdr, Body: body, Received: received}, nil
}

// scan calls fn with every message of stream whose subject matches
// filter, oldest first, until fn returns false. It reads through an
// ephemeral consumer, headers only if headersOnly.
func (q *Queue) scan(ctx context.Context, s jetstream.Stream, filter string, headersOnly bool, fn func(jetstream.Msg) bool) error {
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       headersOnly,
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := q.opCtx()
		defer cancel()
		_ = s.DeleteConsumer(dctx, c.CachedInfo().Name)
	}()
	left := c.CachedInfo().NumPending
	for left > 0 {
		batch, err := c.Fetch(int(min(left, 512)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			left--
			if !fn(m) {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if n == 0 {
			break // removed meanwhile
		}
	}
	return nil
}

// records returns the state records of a kind.
func (q *Queue) records(ctx context.Context, kind string) (map[string]*record, error) {
	out := make(map[string]*record)
	err := q.scan(ctx, q.st, q.stateSubj+kind+".*", false, func(m jetstream.Msg) bool {
		md, _ := m.Metadata()
		var seq uint64
		if md != nil {
			seq = md.Sequence.Stream
		}
		if r, err := decodeRecord(m.Subject(), seq, m.Data()); err == nil {
			out[r.ID] = r
		}
		return true
	})
	return out, err
}

// List implements queue.Store: pending callbacks from the work stream
// (with their failed attempts from the state records), dead and
// delivered ones from the state records, oldest received first. With a
// limit, the pending callbacks read are the limit oldest in the work
// stream, each with one request for the message and one for its
// state: a page of the admin API costs in proportion to the page,
// whatever the backlog. Dead and delivered ones are read from the state
// stream by a consumer, in batches.
func (q *Queue) List(state queue.State, limit int) []queue.Info {
	ctx, cancel := context.WithTimeout(context.Background(), 4*q.config().publishTimeout)
	defer cancel()
	out, err := q.list(ctx, state, limit)
	if err != nil {
		q.config().logger.Warn("jetstream queue: listing callbacks", zap.Stringer("state", state), zap.Error(err))
	}
	slices.SortStableFunc(out, func(a, b queue.Info) int { return a.Received.Compare(b.Received) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func (q *Queue) list(ctx context.Context, state queue.State, limit int) ([]queue.Info, error) {
	var out []queue.Info
	for _, kind := range []string{kindDead, kindDelivered} {
		if state != queue.AnyState && kindState(kind) != state {
			continue
		}
		recs, err := q.records(ctx, kind)
		if err != nil {
			return out, err
		}
		for _, r := range recs {
			if kind == kindDead || time.Since(r.Delivered) < q.config().retention {
				out = append(out, r.info())
			}
		}
	}
	if state != queue.AnyState && state != queue.StatePending {
		return out, nil
	}
	var fails map[string]*record
	if limit <= 0 {
		var err error
		if fails, err = q.records(ctx, kindPending); err != nil {
			return out, err
		}
	}
	q.mu.Lock()
	inflight := make(map[uint64]bool, len(q.inflight))
	for seq := range q.inflight {
		inflight[seq] = true
	}
	q.mu.Unlock()
	var pending []queue.Info
	err := q.scanWork(ctx, limit, func(m *jetstream.RawStreamMsg) error {
		in := queue.Info{State: queue.StatePending, InFlight: inflight[m.Sequence]}
		in.ID, in.Received, in.Size = msgInfo(m.Header)
		in.NextAttempt = in.Received
		r := fails[in.ID]
		if limit > 0 {
			var err error
			if r, err = q.state(ctx, in.ID); err != nil {
				return err
			}
		}
		if r != nil && r.kind == kindPending && r.Seq == m.Sequence {
			in.Attempts, in.LastError, in.LastAttempt, in.NextAttempt = r.Attempts, r.LastError, r.LastAttempt, r.NextAttempt
		}
		pending = append(pending, in)
		return nil
	})
	return append(out, pending...), err
}

// scanWork calls fn with the messages of the work stream, oldest first,
// at most limit of them (all for limit <= 0), until fn returns an
// error. A work-queue stream admits no second consumer on the subjects
// of the delivery one, so it reads message by message: a request per
// pending callback.
func (q *Queue) scanWork(ctx context.Context, limit int, fn func(*jetstream.RawStreamMsg) error) error {
	info, err := q.work.Info(ctx)
	if err != nil {
		return err
	}
	n := 0
	for seq, last := info.State.FirstSeq, info.State.LastSeq; seq <= last && seq > 0 && (limit <= 0 || n < limit); n++ {
		m, err := q.work.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(q.workSubj+"*"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if m.Sequence > last {
			return nil
		}
		if err := fn(m); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
	return nil
}

func kindState(kind string) queue.State {
	switch kind {
	case kindPending:
		return queue.StatePending
	case kindDead:
		return queue.StateDead
	case kindDelivered:
		return queue.StateDelivered
	}
	return queue.AnyState
}

// Retry implements queue.Store. A dead callback is published to the
// work stream again, then its dead letter removed; a pending one is
// published again and its old message deleted, so that it is due at
// once with no failed attempts. A delivery of the old message in
// progress is not interrupted; its outcome is ignored.
func (q *Queue) Retry(ctx context.Context, id string) error {
	if q.isClosing() {
		return queue.ErrClosed
	}
	ctx, cancel := withTimeout(ctx, q.config().publishTimeout)
	defer cancel()
	in, m, err := q.lookup(ctx, id)
	if err != nil {
		return unavailable(ctx, "reading callback", err)
	}
	switch in.State {
	case queue.AnyState:
		return queue.ErrNotFound
	case queue.StateDelivered:
		return queue.ErrDelivered
	case queue.StateDead:
		dm, err := q.dead.GetLastMsgForSubject(ctx, q.deadSubj+subjectKey(id))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return queue.ErrNotFound
		}
		if err != nil {
			return unavailable(ctx, "reading dead letter", err)
		}
		nm := copyMsg(q.workSubj+subjectKey(id), dm)
		_, err = q.js.PublishMsg(ctx, nm, jetstream.WithMsgID(id+"~retry"+strconv.FormatUint(dm.Sequence, 10)),
			jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil && !isWrongLastSeq(err) {
			return unavailable(ctx, "publishing the callback", err)
		}
		// Pending again; now the dead state can go.
		if err := q.purgeState(ctx, id, kindDead, kindPending); err != nil {
			return unavailable(ctx, "removing the dead state", err)
		}
		if err := q.dead.Purge(ctx, jetstream.WithPurgeSubject(q.deadSubj+subjectKey(id))); err != nil {
			return unavailable(ctx, "removing the dead letter", err)
		}
		return nil
	}
	// Pending: a new message replaces the old, which may be waiting for
	// its backoff in the consumer.
	nm := copyMsg(m.Subject, m)
	_, err = q.js.PublishMsg(ctx, nm, jetstream.WithMsgID(id+"~retry"+strconv.FormatUint(m.Sequence, 10)),
		jetstream.WithExpectLastSequencePerSubject(m.Sequence))
	if isWrongLastSeq(err) {
		return nil // replaced meanwhile, by another retry
	}
	if err != nil {
		return unavailable(ctx, "publishing the callback", err)
	}
	if err := q.work.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		return unavailable(ctx, "deleting the old message", err)
	}
	if err := q.purgeState(ctx, id, kindPending); err != nil {
		return unavailable(ctx, "resetting attempts", err)
	}
	return nil
}

// RetryAll implements queue.Store.
func (q *Queue) RetryAll(ctx context.Context, state queue.State) (int, error) {
	if state != queue.StateDead && state != queue.StatePending {
		return 0, fmt.Errorf("jsqueue: cannot retry %s callbacks", state)
	}
	if q.isClosing() {
		return 0, queue.ErrClosed
	}
	lctx, cancel := withTimeout(ctx, 4*q.config().publishTimeout)
	ins, err := q.list(lctx, state, 0)
	cancel()
	if err != nil {
		return 0, unavailable(ctx, "listing callbacks", err)
	}
	n := 0
	for _, in := range ins {
		if err := q.Retry(ctx, in.ID); err != nil {
			if errors.Is(err, queue.ErrNotFound) || errors.Is(err, queue.ErrDelivered) {
				continue // moved on meanwhile
			}
			return n, err
		}
		n++
	}
	return n, nil
}

// Delete implements queue.Store. It writes a deletion record first, so
// that a delivery in progress finds its outcome superseded, then
// removes the callback's messages and records.
func (q *Queue) Delete(ctx context.Context, id string) error {
	if q.isClosing() {
		return queue.ErrClosed
	}
	cfg := q.config()
	ctx, cancel := withTimeout(ctx, cfg.publishTimeout)
	defer cancel()
	rec, err := q.state(ctx, id)
	if err != nil {
		return unavailable(ctx, "reading callback state", err)
	}
	m, err := q.pendingMsg(ctx, id)
	if err != nil {
		return unavailable(ctx, "reading callback", err)
	}
	if m == nil && (rec == nil || rec.kind == kindDeleted || rec.kind == kindPending) {
		return queue.ErrNotFound
	}
	var base uint64
	if rec != nil {
		base = rec.rseq
	}
	// Kept for the duplicate window, the time JetStream may still refuse
	// the id (see Append), at least a minute.
	ttl := max(cfg.dupWindow, time.Minute)
	ok, err := q.putState(ctx, kindDeleted, &record{ID: id, State: "deleted"}, base, ttl)
	if err != nil {
		return unavailable(ctx, "recording the deletion", err)
	}
	if !ok {
		return fmt.Errorf("%w: callback %s changed meanwhile; try again", queue.ErrUnavailable, id)
	}
	if err := q.work.Purge(ctx, jetstream.WithPurgeSubject(q.workSubj+subjectKey(id))); err != nil {
		return unavailable(ctx, "removing the callback", err)
	}
	if err := q.dead.Purge(ctx, jetstream.WithPurgeSubject(q.deadSubj+subjectKey(id))); err != nil {
		return unavailable(ctx, "removing the dead letter", err)
	}
	if err := q.purgeState(ctx, id, kindPending, kindDead, kindDelivered); err != nil {
		return unavailable(ctx, "removing the callback state", err)
	}
	return nil
}

// Stats implements queue.Store, from the streams' and consumers' info:
// a few requests, whatever the number of callbacks. InFlight counts the
// deliveries of this instance; DiskBytes and LiveBytes are the bytes of
// the three streams on one replica. When NATS does not answer, the counts
// of the last successful read stand (zero before the first).
func (q *Queue) Stats() queue.Stats {
	st, err := q.stats()
	if err != nil {
		// Once more: a leader election answers "not found" or times out
		// for a moment.
		st, err = q.stats()
	}
	if err != nil {
		// NATS did not answer (it is down, or a leader is being
		// elected): the last counts read stand, rather than zeros that
		// would tell the metrics and alerts the queue is empty.
		q.config().logger.Debug("jetstream queue: stats unavailable; reporting the last counts", zap.Error(err))
		if last := q.lastStats.Load(); last != nil {
			st = *last
		}
	} else {
		q.lastStats.Store(&st)
	}
	// InFlight is read last: a delivery counted as delivered or dead
	// above whose ack is still to come then counts as in flight.
	q.mu.Lock()
	st.InFlight = len(q.inflight)
	q.mu.Unlock()
	return st
}

// stats reads the counts and sizes from the servers; any failure is an
// error, so that a partial answer is never taken for the whole.
func (q *Queue) stats() (st queue.Stats, err error) {
	ctx, cancel := q.opCtx()
	defer cancel()
	for _, s := range []jetstream.Stream{q.work, q.dead, q.st} {
		info, err := s.Info(ctx)
		if err != nil {
			return st, fmt.Errorf("stream info: %w", err)
		}
		st.DiskBytes += int64(info.State.Bytes)
		switch s {
		case q.work:
			st.Pending = int(info.State.Msgs)
			if info.State.Msgs > 0 {
				st.OldestPending = info.State.FirstTime
				if m, err := s.GetMsg(ctx, info.State.FirstSeq); err == nil {
					if _, r, _ := msgInfo(m.Header); !r.IsZero() {
						st.OldestPending = r
					}
				}
			}
		}
	}
	st.LiveBytes = st.DiskBytes
	count := func(which func() jetstream.Consumer) (int, error) {
		ci, err := which().Info(ctx)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			// Deleted by an operator, or lost with a server's state.
			if err = q.countingConsumer(ctx); err == nil {
				ci, err = which().Info(ctx)
			}
		}
		if err != nil {
			return 0, err
		}
		return int(ci.NumPending), nil
	}
	if st.Delivered, err = count(func() jetstream.Consumer { q.mu.Lock(); defer q.mu.Unlock(); return q.delivered }); err != nil {
		return st, fmt.Errorf("delivered count: %w", err)
	}
	// Dead callbacks by their records, as List and Get see them (the
	// dead letter is written just before its record).
	if st.Dead, err = count(func() jetstream.Consumer { q.mu.Lock(); defer q.mu.Unlock(); return q.deadCount }); err != nil {
		return st, fmt.Errorf("dead count: %w", err)
	}
	return st, nil
}

// Close implements queue.Store. It stops fetching, waits for the
// deliveries in progress until ctx is done, then cancels them; a
// cancelled delivery is handed back to the servers at once (a nak), so
// that another instance takes it over, and does not count as an
// attempt. Then it closes the connection. Closing again returns nil once
// the first Close is done.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		select {
		case <-q.closed:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	q.closing = true
	q.mu.Unlock()
	close(q.stop)
	q.fetchCancel()
	q.fetcher.Wait()

	var cerr error
	n := 0
	if queue.WaitDeliveries(ctx, &q.deliveries, func() {
		q.mu.Lock()
		n = len(q.inflight)
		q.mu.Unlock()
		q.deliverCancel()
	}) {
		cerr = fmt.Errorf("jsqueue: close: %d deliveries in progress cancelled, handed back for redelivery: %w", n, ctx.Err())
	}
	q.deliverCancel()
	if err := q.nc.FlushTimeout(time.Second); err != nil && cerr == nil && !errors.Is(err, nats.ErrConnectionClosed) {
		q.config().logger.Debug("jetstream queue: flush at close", zap.Error(err))
	}
	q.nc.Close()
	close(q.closed)
	return cerr
}

// kill drops the connection without handing anything back, as a crash
// would: for tests.
func (q *Queue) kill() {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	q.nc.Close()
	close(q.stop)
	q.fetchCancel()
	q.deliverCancel()
	q.fetcher.Wait()
	q.deliveries.Wait()
	close(q.closed)
}

// copyMsg makes a message on subject with the callback of m: its data
// and Atlas headers, not the NATS ones (message id, expectations).
func copyMsg(subject string, m *jetstream.RawStreamMsg) *nats.Msg {
	nm := nats.NewMsg(subject)
	for _, k := range []string{hdrID, hdrReceived, hdrSize, hdrSealed} {
		if v := m.Header.Get(k); v != "" {
			nm.Header.Set(k, v)
		}
	}
	nm.Data = m.Data
	return nm
}

// Connect connects to the NATS servers of opts as Open does (the same
// URLs, credentials, TLS and reconnect rules), for another store of the
// fleet on the same servers (the ledger of batches). While no server
// answers it tries again, for up to six publish timeouts (at most 30 s).
// The connection is the caller's to close.
func Connect(opts Options) (*nats.Conn, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	nopts, err := cfg.natsOptions(func() {}, func() {})
	if err != nil {
		return nil, err
	}
	return connect(cfg, nopts, time.Now().Add(min(6*cfg.publishTimeout, 30*time.Second)))
}
