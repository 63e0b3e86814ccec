package callback

import (
	"slices"
	"sync"

	"github.com/caddy-atlas/caddy-atlas/mask"
)

// queueRoutes are the callback routes using one shared durable queue (a
// spool or a JetStream queue), in the order they were provisioned. The
// settings in effect are those of the route provisioned last, so that a
// reload applies the new config's settings at once and a failed reload
// goes back to the running config's.
type queueRoutes struct {
	mu     sync.Mutex
	routes []*Callback
}

// add checks c against each route already there (check returns an error
// to refuse it), applies c's settings and adds c.
func (q *queueRoutes) add(c *Callback, check func(o *Callback) error, apply func(c *Callback) error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, o := range q.routes {
		if err := check(o); err != nil {
			return err
		}
	}
	if err := apply(c); err != nil {
		return err
	}
	q.routes = append(q.routes, c)
	return nil
}

// remove removes c; if its settings were in effect, reapply is called
// with the last remaining route, whose settings apply again.
func (q *queueRoutes) remove(c *Callback, reapply func(last *Callback)) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := slices.Index(q.routes, c)
	if i < 0 {
		return
	}
	wasCurrent := i == len(q.routes)-1
	q.routes = slices.Delete(q.routes, i, i+1)
	if wasCurrent && len(q.routes) > 0 {
		reapply(q.routes[len(q.routes)-1])
	}
}

// current returns the route whose settings are in effect, nil if none.
func (q *queueRoutes) current() *Callback {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.routes) == 0 {
		return nil
	}
	return q.routes[len(q.routes)-1]
}

// masker returns the masker of the route whose settings are in effect
// (nil if none, or if it masks nothing).
func (q *queueRoutes) masker() *mask.Masker {
	if c := q.current(); c != nil {
		return c.masker
	}
	return nil
}
