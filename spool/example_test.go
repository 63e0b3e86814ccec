package spool_test

import (
	"context"
	"errors"
	"log"
	"net/http"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// The callback route appends, and acknowledges only a nil error; the
// spool delivers to the app.
func Example() {
	sp, err := spool.Open("/var/lib/caddy/atlas-spool", spool.Options{
		Deliver: (&queue.HTTPDeliverer{URL: "http://127.0.0.1:8080/hooks/atlas"}).Deliver,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sp.Close(ctx) // drains deliveries in progress for up to 10s
	}()

	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Atlas-Callback-Id", "9f86d081884c7d659a2feaa0c55ad015")
	res, err := sp.Append(context.Background(), queue.Entry{
		ID: "9f86d081884c7d659a2feaa0c55ad015", Header: h, Body: []byte(`{"data":[]}`),
	})
	switch {
	case errors.Is(err, queue.ErrUnavailable):
		// 503 with Retry-After: Atlas will try again.
	case err != nil:
		// 500
	default:
		// 202 {"status": "accepted", "callback_id": res.ID}
		_ = res
	}
}
