package jsqueue

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/internal/testutil"
	"github.com/caddy-atlas/caddy-atlas/jsqueue/natstest"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/queue/queuetest"
)

// TestSealedRawMessages reads every message of the three streams, raw,
// while a sealed callback is pending (its delivery failing) and after
// another one is delivered: none holds an identity number, a name, a
// header value or the payload marker of the callbacks.
func TestSealedRawMessages(t *testing.T) {
	n := natstest.Start(t)
	stream := newStreamName()
	rec := &queuetest.Recorder{}
	rec.SetFail(func(d queue.Delivery) error {
		if d.ID == "cb-pending" {
			return errors.New("app down")
		}
		return nil
	})
	o := testOptions([]string{n.URL()}, stream, 1, queuetest.Options{Deliver: rec.Deliver,
		MaxAttempts: 50, BackoffMin: time.Hour, BackoffMax: time.Hour})
	o.Keyring = testKeyring(t, 1)
	q := openQueue(t, o)

	secrets := [][]byte{[]byte("PAYLOAD-MARKER-7f3a"), []byte("2345 6789 0123"), []byte("ABCPK1234F"), []byte("RAVI KUMAR SHARMA"), []byte("atlas-subject-9")}
	body := []byte(`{"data":[{"document_id":"PAYLOAD-MARKER-7f3a","file_data":{"aadhaar_number":{"value":"2345 6789 0123"},` +
		`"pan_number":{"value":"ABCPK1234F"},"name":{"value":"RAVI KUMAR SHARMA"}}}]}`)
	for _, id := range []string{"cb-pending", "cb-delivered"} {
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set("X-Atlas-Subject", "atlas-subject-9")
		queuetest.MustAppend(t, q, queue.Entry{ID: id, Header: h, Body: body})
	}
	testutil.WaitFor(t, 20*time.Second, "one delivery, one failed attempt", func() bool {
		in, _ := q.Get("cb-pending")
		return rec.Count("cb-delivered") == 1 && in.Attempts >= 1
	})

	js := rawJS(t, n.URL())
	ctx := context.Background()
	read := 0
	for _, name := range []string{stream, stream + "_DEAD", stream + "_STATE"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted (acked work, replaced state)
			}
			read++
			raw := append([]byte(nil), m.Data...)
			for k, vs := range m.Header {
				raw = append(raw, k...)
				for _, v := range vs {
					raw = append(raw, v...)
				}
			}
			for _, s := range secrets {
				if bytes.Contains(raw, s) {
					t.Errorf("stream %s message %d holds %q", name, seq, s)
				}
			}
		}
	}
	if read < 2 {
		t.Fatalf("read %d raw messages, want at least the pending callback and a state record", read)
	}
}
