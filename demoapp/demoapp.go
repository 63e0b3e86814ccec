// Package demoapp is the stand-in app of the caddy-atlas demo
// (scripts/run.sh), as the http.handlers.atlas_demo_app module and the
// atlas_demo_app Caddyfile directive: it takes the callbacks the gateway
// delivers and shows what it received.
//
// FOR DEMOS ONLY: it keeps the last callbacks in memory and shows them to
// anyone who asks. Built into cmd/caddy, not into a production Caddy.
package demoapp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-atlas/caddy-atlas/internal/cfparse"
	"github.com/caddy-atlas/caddy-atlas/internal/demostory"
)

func init() {
	caddy.RegisterModule(App{})
	httpcaddyfile.RegisterHandlerDirective("atlas_demo_app", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("atlas_demo_app", httpcaddyfile.Before, "respond")
}

// Bounds of what the app keeps and reads.
const (
	keepCallbacks = 100
	maxBody       = 64 << 20
)

// received is one callback the app got.
type received struct {
	At          time.Time `json:"at"`
	ID          string    `json:"callback_id"`
	Subject     string    `json:"subject"`
	Count       string    `json:"document_count"`
	Attempt     string    `json:"attempt,omitempty"`
	DocumentIDs []string  `json:"document_ids"`
	Again       bool      `json:"again,omitempty"`
}

// history is what every App of the process has received, newest last, so
// that the page survives a config reload.
var history struct {
	mu   sync.Mutex
	list []received
	seen map[string]bool
}

// App is the stand-in app. A POST carrying X-Atlas-Callback-Id (what the
// callback route, or a durable delivery, gives the app) is recorded,
// told as one line of the demo's story on standard output (package
// internal/demostory) and answered 200; GET
// {path} lists what was received (text, or JSON with ?format=json);
// anything else goes to the next handler.
//
//	atlas_demo_app
//
// The listing is at /callbacks (JSON config: path).
type App struct {
	// Path is where the listing is served. Default /callbacks.
	Path string `json:"path,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.atlas_demo_app",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets the default path.
func (a *App) Provision(caddy.Context) error {
	if a.Path == "" {
		a.Path = "/callbacks"
	}
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switch {
	case r.Method == http.MethodPost && r.Header.Get("X-Atlas-Callback-Id") != "":
		return a.take(w, r)
	case r.Method == http.MethodGet && r.URL.Path == a.Path:
		return a.list(w, r)
	}
	return next.ServeHTTP(w, r)
}

// take records one callback.
func (a *App) take(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
	}
	c := received{
		At:      time.Now(),
		ID:      r.Header.Get("X-Atlas-Callback-Id"),
		Subject: r.Header.Get("X-Atlas-Subject"),
		Count:   r.Header.Get("X-Atlas-Document-Count"),
		Attempt: r.Header.Get("X-Atlas-Attempt"),
	}
	var payload struct {
		Data []struct {
			DocumentID string `json:"document_id"`
		} `json:"data"`
	}
	// The gateway validated the payload; a body that does not decode
	// still counts as received, with no document ids.
	_ = json.Unmarshal(body, &payload)
	for _, d := range payload.Data {
		c.DocumentIDs = append(c.DocumentIDs, d.DocumentID)
	}

	history.mu.Lock()
	if history.seen == nil {
		history.seen = make(map[string]bool)
	}
	c.Again = history.seen[c.ID]
	history.seen[c.ID] = true
	history.list = append(history.list, c)
	if len(history.list) > keepCallbacks {
		history.list = history.list[len(history.list)-keepCallbacks:]
	}
	history.mu.Unlock()

	tell(c)

	w.Header().Set("Content-Type", "application/json")
	_, err = fmt.Fprintf(w, "{\"received\":%q}\n", c.ID)
	return err
}

// tell prints what the app got as one line of the demo's story: the
// callback, its attempt, the batch its documents belong to (from the
// demo's record of the uploads) and whether that batch is now complete.
func tell(c received) {
	delivered := "delivered"
	if c.Again {
		delivered = "delivered again"
	}
	if c.Attempt != "" {
		delivered += " (attempt " + c.Attempt + ")"
	}
	ids := ""
	if len(c.DocumentIDs) > 0 {
		ids = " (" + demostory.List(c.DocumentIDs) + ")"
	}
	what := documents(len(c.DocumentIDs)) + ids
	if batch, total, ok := demostory.BatchOf(c.DocumentIDs); ok {
		if total == len(c.DocumentIDs) {
			what = "batch " + batch + " complete, " + what
		} else {
			what = fmt.Sprintf("batch %s, %d of its %s%s", batch, len(c.DocumentIDs), documents(total), ids)
		}
	}
	again := ""
	if c.Again {
		again = "; the app saw this id before: deduplicate on it"
	}
	demostory.Printf("app: callback %s %s: %s%s", demostory.Short(c.ID), delivered, what, again)
}

// documents is "1 document" or "n documents".
func documents(n int) string {
	if n == 1 {
		return "1 document"
	}
	return fmt.Sprintf("%d documents", n)
}

// list serves what was received, newest first.
func (a *App) list(w http.ResponseWriter, r *http.Request) error {
	history.mu.Lock()
	list := make([]received, len(history.list))
	for i, c := range history.list {
		list[len(list)-1-i] = c
	}
	history.mu.Unlock()

	if r.URL.Query().Get("format") == "json" {
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]any{"callbacks": list})
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(list) == 0 {
		_, err := io.WriteString(w, "no callback received yet\n")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECEIVED\tCALLBACK ID\tSUBJECT\tDOCUMENTS\tDOCUMENT IDS")
	for _, c := range list {
		ids := strings.Join(c.DocumentIDs, ", ")
		if c.Again {
			ids += " (again)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.At.Format(time.TimeOnly), c.ID, c.Subject, c.Count, ids)
	}
	return tw.Flush()
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens:
//
//	atlas_demo_app
//
// (A path argument would be taken for a matcher.)
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return cfparse.Unrecognized(d, nil) // the block takes none
	}
	return nil
}

// parseCaddyfile unmarshals the atlas_demo_app directive.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(App)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*App)(nil)
	_ caddyhttp.MiddlewareHandler = (*App)(nil)
	_ caddyfile.Unmarshaler       = (*App)(nil)
)
