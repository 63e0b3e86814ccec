package atlastest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

const (
	// callbackTick is how often, in real time, the simulator looks for
	// automatic callbacks that have fallen due on its clock.
	callbackTick = 10 * time.Millisecond
	maxEvents    = 1000
)

// AutoCallback makes the simulator deliver callbacks by itself, as Atlas
// does for an account with callbacks enabled: when the documents of a
// docstream batch are done (see Options.ProcessingDelay), it delivers
// them to Target as DeliverCallback does. Bulk batches never get one.
// Drops and repeats are decided by each callback's sequence number (1 for
// the first callback the simulator sends, counting dropped ones), so a
// test gets the same ones every run.
type AutoCallback struct {
	// Target is where callbacks go: auth_url, callback_url and the
	// credentials presented at auth_url. Target.CallbackURL must be set.
	Target CallbackTarget

	// PerDocument sends one callback per document, carrying that
	// document alone (page 1 of 1, total_items 1), when it is done. By
	// default one callback per batch carries every document of the batch
	// (BatchPayload) when the last is done.
	PerDocument bool

	// Delay is how long after the documents are done, on the
	// simulator's clock, the callback falls due. A fake clock must pass
	// it.
	Delay time.Duration

	// Drop is the fraction of callbacks, in [0, 1], that are never sent;
	// DropNth lists the sequence numbers of more that are not.
	Drop    float64
	DropNth []int

	// Repeat is the fraction of callbacks, in [0, 1], sent twice in a
	// row; RepeatNth lists the sequence numbers of more that are. A
	// dropped callback is not repeated.
	Repeat    float64
	RepeatNth []int

	// Seed varies which callbacks Drop and Repeat choose.
	Seed uint64
}

// CallbackEvent is what became of one automatic callback.
type CallbackEvent struct {
	// Seq is the callback's sequence number, from 1, in the order they
	// fell due (ties in upload order, then document order).
	Seq int
	// BatchID is the batch, DocumentIDs the documents the callback
	// carries.
	BatchID     string
	DocumentIDs []string
	// Due is when it fell due on the simulator's clock.
	Due time.Time
	// Dropped reports a callback never sent, Repeated one sent twice.
	Dropped, Repeated bool
	// Deliveries are the attempts: none if dropped, two if repeated.
	Deliveries []Delivery
}

// MarshalJSON encodes e as {"seq", "batch_id", "document_ids", "due",
// "dropped", "repeated", "deliveries"}.
func (e CallbackEvent) MarshalJSON() ([]byte, error) {
	d := e.Deliveries
	if d == nil {
		d = []Delivery{}
	}
	return json.Marshal(struct {
		Seq         int        `json:"seq"`
		BatchID     string     `json:"batch_id"`
		DocumentIDs []string   `json:"document_ids"`
		Due         time.Time  `json:"due"`
		Dropped     bool       `json:"dropped"`
		Repeated    bool       `json:"repeated"`
		Deliveries  []Delivery `json:"deliveries"`
	}{e.Seq, e.BatchID, e.DocumentIDs, e.Due, e.Dropped, e.Repeated, d})
}

// CallbackCounts sums up the automatic callbacks since the last reset.
type CallbackCounts struct {
	// Pending callbacks are scheduled and not yet sent or dropped.
	Pending int `json:"pending"`
	// Sent callbacks were not dropped (a repeated one counts once).
	Sent int `json:"sent"`
	// Delivered and Failed count attempts: a repeated callback makes two.
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
	Dropped   int `json:"dropped"`
	Repeated  int `json:"repeated"`
}

// scheduledCallback is an automatic callback waiting to fall due.
type scheduledCallback struct {
	cfg     *AutoCallback
	batchID string
	docs    []batchDoc
	due     time.Time
	order   uint64
}

// copyAutoCallback returns a deep copy of a, nil for nil or a target
// without a callback URL.
func copyAutoCallback(a *AutoCallback) *AutoCallback {
	if a == nil || a.Target.CallbackURL == "" {
		return nil
	}
	c := *a
	c.DropNth = slices.Clone(a.DropNth)
	c.RepeatNth = slices.Clone(a.RepeatNth)
	return &c
}

// SetAutoCallback switches automatic callbacks on with a (a copy is
// kept), or off with nil or an empty Target.CallbackURL. It applies to
// batches uploaded from now on; callbacks already scheduled keep the
// settings of their upload.
func (s *Simulator) SetAutoCallback(a *AutoCallback) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auto = copyAutoCallback(a)
}

// scheduleCallbacks schedules the automatic callbacks of a new docstream
// batch. s.mu is held.
func (s *Simulator) scheduleCallbacks(b *batch) {
	if s.auto == nil || b.service != serviceDocstream {
		return
	}
	add := func(docs []batchDoc) {
		var due time.Time
		for _, d := range docs {
			if d.readyAt.After(due) {
				due = d.readyAt
			}
		}
		s.cbOrder++
		s.scheduled = append(s.scheduled, &scheduledCallback{
			cfg: s.auto, batchID: b.id, docs: docs, due: due.Add(s.auto.Delay), order: s.cbOrder,
		})
	}
	if s.auto.PerDocument {
		for i := range b.docs {
			add(b.docs[i : i+1])
		}
	} else {
		add(b.docs)
	}
	if !s.cbRunning {
		s.cbRunning = true
		s.loops.Add(1)
		go s.callbackLoop()
	}
}

// callbackLoop sends the automatic callbacks as they fall due, until
// none is scheduled or the simulator closes.
func (s *Simulator) callbackLoop() {
	defer s.loops.Done()
	t := time.NewTicker(callbackTick)
	defer t.Stop()
	for {
		s.FlushCallbacks()
		s.mu.Lock()
		if len(s.scheduled) == 0 {
			s.cbRunning = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		select {
		case <-t.C:
		case <-s.done:
			s.mu.Lock()
			s.cbRunning = false
			s.mu.Unlock()
			return
		}
	}
}

// FlushCallbacks sends, now and in order, the automatic callbacks that
// are due on the simulator's clock, and returns when they are done. The
// simulator does this by itself every few milliseconds; a test that
// steps a fake clock calls it to have them sent before it goes on.
func (s *Simulator) FlushCallbacks() {
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	now := s.now()
	s.mu.Lock()
	var due []*scheduledCallback
	s.scheduled = slices.DeleteFunc(s.scheduled, func(c *scheduledCallback) bool {
		if c.due.After(now) {
			return false
		}
		due = append(due, c)
		return true
	})
	slices.SortStableFunc(due, func(a, b *scheduledCallback) int {
		if c := a.due.Compare(b.due); c != 0 {
			return c
		}
		return int(a.order - b.order)
	})
	objectType := s.docTypeForm == DocumentTypeObject
	events := make([]CallbackEvent, len(due))
	for i, c := range due {
		s.cbSeq++
		e := CallbackEvent{Seq: s.cbSeq, BatchID: c.batchID, Due: c.due}
		for _, d := range c.docs {
			e.DocumentIDs = append(e.DocumentIDs, d.documentID)
		}
		e.Dropped = chosen(c.cfg.Seed, "drop", e.Seq, c.cfg.Drop, c.cfg.DropNth)
		e.Repeated = !e.Dropped && chosen(c.cfg.Seed, "repeat", e.Seq, c.cfg.Repeat, c.cfg.RepeatNth)
		events[i] = e
	}
	gen := s.cbGen
	s.mu.Unlock()

	for i, c := range due {
		e := &events[i]
		if !e.Dropped {
			var payload []byte
			if c.cfg.PerDocument {
				payload, _ = json.Marshal(extractsPage{
					Data:    appendItems([]extractItem{}, c.docs, now, PendingListed, objectType),
					Page:    1,
					PerPage: 1, TotalPages: 1, TotalItems: 1,
				})
			} else {
				payload, _ = s.BatchPayload(c.batchID)
			}
			attempts := 1
			if e.Repeated {
				attempts = 2
			}
			for range attempts {
				d := Delivery{BatchID: c.batchID}
				if payload == nil {
					d.Err = ErrUnknownBatch
				} else {
					d.Err = s.post(s.ctx, c.cfg.Target, payload, &d)
				}
				e.Deliveries = append(e.Deliveries, d)
			}
		}
		s.mu.Lock()
		if s.cbGen == gen { // no Reset in between
			s.events = append(s.events, *e)
			if len(s.events) > maxEvents {
				s.events = s.events[len(s.events)-maxEvents:]
			}
			s.count(e)
		}
		s.mu.Unlock()
	}
}

// count adds e to the counts. s.mu is held.
func (s *Simulator) count(e *CallbackEvent) {
	switch {
	case e.Dropped:
		s.cbCounts.Dropped++
		return
	case e.Repeated:
		s.cbCounts.Repeated++
	}
	s.cbCounts.Sent++
	for _, d := range e.Deliveries {
		if d.Err == nil {
			s.cbCounts.Delivered++
		} else {
			s.cbCounts.Failed++
		}
	}
}

// chosen reports whether callback seq is one of nth or falls in the
// fraction of callbacks that seed and what choose.
func chosen(seed uint64, what string, seq int, fraction float64, nth []int) bool {
	if slices.Contains(nth, seq) {
		return true
	}
	if fraction <= 0 {
		return false
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	sum := sha256.Sum256([]byte(what + ":" + string(b[:]) + ":" + strconv.Itoa(seq)))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11)/(1<<53) < fraction
}

// Callbacks returns what became of the automatic callbacks since the last
// reset, in sequence order (the last 1000).
func (s *Simulator) Callbacks() []CallbackEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CallbackEvent, len(s.events))
	for i, e := range s.events {
		e.DocumentIDs = slices.Clone(e.DocumentIDs)
		e.Deliveries = slices.Clone(e.Deliveries)
		out[i] = e
	}
	return out
}

// CallbackCounts returns the counts of automatic callbacks since the last
// reset.
func (s *Simulator) CallbackCounts() CallbackCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cbCounts
	c.Pending = len(s.scheduled)
	return c
}

// resetCallbacks forgets scheduled callbacks, events and counts, and
// restarts the sequence numbers. s.mu is held.
func (s *Simulator) resetCallbacks() {
	s.scheduled = nil
	s.events = nil
	s.cbCounts = CallbackCounts{}
	s.cbSeq = 0
	s.cbGen++
	s.auto = copyAutoCallback(s.defaultAuto)
}

// Close stops the simulator's automatic callbacks, waiting for their
// loop to end, and aborts pending delays (they answer 503). Server.Close
// calls it.
func (s *Simulator) Close() {
	s.close()
}
