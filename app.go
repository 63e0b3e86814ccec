package caddyatlas

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-atlas/caddy-atlas/queue"
	_ "github.com/caddy-atlas/caddy-atlas/queues" // the queue backends
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the `atlas` app: the state of caddy-atlas that every site of a
// config shares, configured in the global options as Caddy's own `tls`
// and `pki` apps are:
//
//	{
//		atlas {
//			endpoint      https://api.helloatlas.in
//			client_id     {env.ATLAS_CLIENT_ID}
//			client_secret {file./run/secrets/atlas-client-secret}
//			queue spool /var/lib/caddy/atlas
//		}
//	}
//
// It owns the Atlas accounts (each with its managed token, shared across
// the config's sites and across reloads) and the durable queue of the
// callback routes. A site's atlas handler uses the app's account unless
// its own block names one; settings written inline in a site's block
// populate the app when the config is provisioned, and two places that
// configure one client id differently are an error that names both.
type App struct {
	// The account of the outbound routes of every site whose atlas
	// block names none.
	Account

	// The durable queue of the callback routes whose block names none: a
	// module of the atlas.queues namespace, e.g. {"backend": "spool",
	// "dir": "/var/lib/caddy/atlas"} or {"backend": "jetstream", "urls":
	// ["nats://nats-1:4222"]}.
	QueueRaw json.RawMessage `json:"queue,omitempty" caddy:"namespace=atlas.queues inline_key=backend"`

	// The ledger of batches: with it, the upload routes record what
	// Atlas accepted, and {batches_path} answers whether a batch is
	// done. Needs a spool or jetstream queue here. See Batches.
	Batches *Batches `json:"batches,omitempty"`

	ctx    caddy.Context
	logger *zap.Logger

	mu *sync.Mutex
	// accounts are the accounts in use in this config, by client id.
	accounts map[string]*account
	// own is the app's account, nil if the app configures none.
	own *account
	// queue is the app's queue, nil if the app configures none.
	queue queue.Backend
	// ledger is the ledger of batches, nil without batches; poll its
	// reconciler.
	ledger *ledgerHolder
	poll   *poller
	// starts open the queues of the config's routes, at Start.
	starts []func() error
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "atlas",
		New: func() caddy.Module { return new(App) },
	}
}

// appPlace names the global options in errors.
const appPlace = "the global atlas options"

// Provision opens the app's account and loads its queue, if it
// configures them, connecting to nothing and writing nothing. The
// queues open when the config starts (see Start).
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.mu = new(sync.Mutex)
	a.accounts = make(map[string]*account)
	if !a.Account.configured() && a.TokenStorage != "" {
		return errors.New("token_storage in the global atlas options is a setting of its account: give it endpoint, client_id and client_secret too, or set token_storage in the site that has the account")
	}
	if !a.Account.configured() && a.Service != "" {
		return errors.New("service in the global atlas options is a setting of its account: give it endpoint, client_id and client_secret too, or set service in the site that has the account")
	}
	if a.Account.configured() {
		acct, err := a.account(a.Account, appPlace)
		if err != nil {
			return err
		}
		a.own = acct
	}
	if a.QueueRaw != nil {
		mod, err := ctx.LoadModule(a, "QueueRaw")
		if err != nil {
			return fmt.Errorf("loading the queue: %w", err)
		}
		b, ok := mod.(queue.Backend)
		if !ok {
			return fmt.Errorf("the queue module %T is not a queue backend", mod)
		}
		a.queue = b
	}
	return a.provisionBatches()
}

// Queue returns the app's queue, nil if it configures none.
func (a *App) Queue() queue.Backend { return a.queue }

// Start implements caddy.App: it opens the queues of the config's
// callback routes (creating a spool's directory, connecting to NATS),
// so that a config that is only validated (caddy validate) has no side
// effects. A queue that fails to open fails the config's load. Until its
// queue is open, a route answers callbacks 503 with Retry-After.
func (a *App) Start() error {
	a.mu.Lock()
	starts := a.starts
	a.mu.Unlock()
	for _, start := range starts {
		if err := start(); err != nil {
			return err
		}
	}
	return nil
}

// onStart adds f to what Start runs.
func (a *App) onStart(f func() error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starts = append(a.starts, f)
}

// Stop implements caddy.App. What the app holds is released at Cleanup,
// once the config that replaces this one holds it too.
func (a *App) Stop() error { return a.stopReconciler() }

// Cleanup releases the accounts: their token sources stop when no
// config uses them any more.
func (a *App) Cleanup() error {
	if a.mu == nil {
		return nil // not provisioned
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, acct := range a.accounts {
		errs = append(errs, acct.release())
	}
	a.accounts = nil
	a.own = nil
	a.starts = nil
	errs = append(errs, a.releaseLedger())
	return errors.Join(errs...)
}

// defaultAccount returns the app's own account, nil if it has none.
func (a *App) defaultAccount() *account {
	if a.mu == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.own
}

// account returns the account conf describes, opening it on its first
// use in this config. A client id configured in two places with another
// endpoint, secret or token storage is an error that names both places.
func (a *App) account(conf Account, place string) (*account, error) {
	acct, secret, err := resolveAccount(conf)
	if err != nil {
		return nil, err
	}
	acct.place = place
	if a.mu == nil {
		return nil, errors.New("the atlas app is not provisioned")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.accounts == nil {
		return nil, errors.New("the atlas app is not provisioned")
	}
	if o, ok := a.accounts[acct.clientID]; ok {
		if diff := o.differs(acct); diff != "" {
			return nil, fmt.Errorf("client_id %q is configured twice, with a different %s: in %s and in %s; configure the account once (in the global atlas options) or give each place the same settings",
				acct.clientID, diff, o.place, place)
		}
		return o, nil
	}
	if err := acct.open(a.ctx, secret, a.logger); err != nil {
		_ = acct.release()
		return nil, err
	}
	a.accounts[acct.clientID] = acct
	return acct, nil
}

// atlasApp returns the atlas app of ctx's config, provisioning it on
// first use. A context made outside a config load (as in unit tests) has
// no config: it gets an app of its own, which owned reports, for the
// caller to clean up.
func atlasApp(ctx caddy.Context) (app *App, owned bool, err error) {
	v, err := contextApp(ctx)
	if err != nil {
		return nil, false, err
	}
	if v != nil {
		app, ok := v.(*App)
		if !ok {
			return nil, false, fmt.Errorf("the atlas app is a %T", v)
		}
		return app, false, nil
	}
	app = new(App)
	if err := app.Provision(ctx); err != nil {
		return nil, false, err
	}
	return app, true, nil
}

// contextApp returns ctx.App("atlas"), or nil without an error for a
// context that has no config.
func contextApp(ctx caddy.Context) (v any, err error) {
	defer func() {
		if recover() != nil {
			v, err = nil, nil
		}
	}()
	return ctx.App("atlas")
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
