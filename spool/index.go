package spool

import (
	"container/heap"
	"time"

	"github.com/caddy-atlas/caddy-atlas/queue"
)

// entry is the in-memory state of a callback. Bodies stay on disk: the
// entry knows where its enqueue record is.
type entry struct {
	id string
	// seq orders entries by arrival (log order).
	seq      uint64
	state    queue.State
	received time.Time
	size     int64

	// seg, off and n locate the enqueue record; n is 0 when there is no
	// body on disk (a delivered tombstone after compaction). seg is also
	// the entry's home: compaction of seg covers the entry.
	seg *segment
	off int64
	n   int64
	// floor is the lowest segment that may still hold records of an
	// earlier callback of the same id (one this one replaced), 0 if
	// none: their enqueue records would bring it back if this one were
	// forgotten without a delete record after them.
	floor uint64
	// key is the id of the key sealing the enqueue record, "" if it is
	// plaintext. unsealable is set when compaction could not open it
	// to rewrite it under the first key.
	key        string
	unsealable bool
	// rec is the enqueue record as appended, kept in memory until the
	// first delivery attempt takes it (FileSpool.memBytes counts it);
	// nil once taken, or if the memory budget was spent.
	rec []byte

	attempts    int
	lastErr     string
	lastAttempt time.Time
	next        time.Time
	delivered   time.Time

	inflight bool
	// removed is set when the entry leaves the index (deleted, replaced,
	// forgotten), for goroutines that still hold it.
	removed bool
	// heap is the scheduling heap holding the entry, if any, and hidx
	// its index there.
	heap *entryHeap
	hidx int
}

// tombstoneBytes and attemptBytes approximate the log size of a delivered
// record and of an attempt record, without the id and error text.
const (
	tombstoneBytes = headerSize + 48
	attemptBytes   = headerSize + 32
)

// liveBytes is the log size compaction keeps for e.
func (e *entry) liveBytes() int64 {
	if e.state == queue.StateDelivered {
		return tombstoneBytes + int64(len(e.id))
	}
	n := e.n
	if e.attempts > 0 || e.lastErr != "" {
		n += attemptBytes + int64(len(e.id)+len(e.lastErr))
	}
	return n
}

func (e *entry) info() queue.Info {
	in := queue.Info{
		ID:          e.id,
		State:       e.state,
		Size:        e.size,
		Attempts:    e.attempts,
		LastError:   e.lastErr,
		Received:    e.received,
		LastAttempt: e.lastAttempt,
		Delivered:   e.delivered,
		InFlight:    e.inflight,
	}
	if e.state == queue.StatePending {
		in.NextAttempt = e.next
	}
	return in
}

// entryHeap is a heap of entries; ready orders by arrival, wait by due
// time then arrival.
type entryHeap struct {
	items  []*entry
	byTime bool
}

func (h *entryHeap) Len() int { return len(h.items) }

func (h *entryHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if h.byTime && !a.next.Equal(b.next) {
		return a.next.Before(b.next)
	}
	return a.seq < b.seq
}

func (h *entryHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].hidx = i
	h.items[j].hidx = j
}

// Push is for container/heap.
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.heap, e.hidx = h, len(h.items)
	h.items = append(h.items, e)
}

// Pop is for container/heap.
func (h *entryHeap) Pop() any {
	n := len(h.items) - 1
	e := h.items[n]
	h.items[n] = nil
	h.items = h.items[:n]
	e.heap, e.hidx = nil, -1
	return e
}

func (h *entryHeap) peek() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}

// schedule queues a pending entry that is not in flight: in the ready
// heap if it is due, else in the wait heap. The caller holds s.mu.
func (s *FileSpool) schedule(e *entry, now time.Time) {
	if e.heap != nil || e.inflight || e.state != queue.StatePending {
		return
	}
	if e.next.After(now) {
		heap.Push(&s.wait, e)
	} else {
		heap.Push(&s.ready, e)
	}
}

// unschedule takes e out of its heap. The caller holds s.mu.
func (s *FileSpool) unschedule(e *entry) {
	if e.heap != nil {
		heap.Remove(e.heap, e.hidx)
	}
}

// remove takes e out of the index. The caller holds s.mu.
func (s *FileSpool) remove(e *entry) {
	s.unschedule(e)
	s.takeRec(e)
	e.removed = true
	if s.entries[e.id] == e {
		delete(s.entries, e.id)
	}
}

// takeRec returns the record e keeps in memory, if any, and lets go of
// it. The caller holds s.mu.
func (s *FileSpool) takeRec(e *entry) []byte {
	rec := e.rec
	if rec != nil {
		e.rec = nil
		s.memBytes -= int64(len(rec))
	}
	return rec
}

// expired reports whether a delivered entry is past the retention window:
// it no longer deduplicates, and compaction forgets it.
func expired(e *entry, now time.Time, retention time.Duration) bool {
	return e.state == queue.StateDelivered && now.Sub(e.delivered) >= retention
}

// lowest is the lowest segment that may hold records of e or of the
// callbacks of its id that it replaced: its records are in its home
// segment or after it.
func (e *entry) lowest() uint64 {
	if e.floor != 0 && e.floor < e.seg.id {
		return e.floor
	}
	return e.seg.id
}

// apply replays one log record into the index. Records are absolute, so
// replaying one whose effect is already in the index changes nothing.
func (s *FileSpool) apply(r *Record, seg *segment, off, n int64) {
	e := s.entries[r.ID]
	switch r.Type {
	case RecordEnqueue, RecordSealedEnqueue:
		var floor uint64
		if e != nil {
			s.remove(e)
			floor = e.lowest()
			e.seg.letGoAtOpen = e.seg.letGoAtOpen || e.n > 0
		}
		s.seq++
		s.entries[r.ID] = &entry{
			id: r.ID, seq: s.seq, state: queue.StatePending, received: r.Time,
			size: r.bodySize(), seg: seg, off: off, n: n, key: s.internKey(keyOf(r)), hidx: -1, floor: floor,
		}
	case RecordAttempt:
		if e != nil && e.state != queue.StateDelivered {
			e.attempts, e.lastAttempt, e.next, e.lastErr = r.Attempts, r.Time, r.Next, r.Err
		}
	case RecordDelivered:
		if e == nil {
			s.seq++
			e = &entry{id: r.ID, seq: s.seq, received: r.Received, size: r.Size, seg: seg, hidx: -1}
			s.entries[r.ID] = e
		}
		e.seg.letGoAtOpen = e.seg.letGoAtOpen || e.n > 0
		e.state, e.delivered, e.attempts = queue.StateDelivered, r.Time, r.Attempts
	case RecordDead:
		if e != nil && e.state == queue.StatePending {
			e.state = queue.StateDead
		}
	case RecordRetry:
		if e != nil && e.state != queue.StateDelivered {
			e.state, e.attempts, e.next = queue.StatePending, 0, r.Time
		}
	case RecordDelete:
		if e != nil {
			s.remove(e)
			s.addGhost(e.id, e.lowest(), s.epoch)
			e.seg.letGoAtOpen = e.seg.letGoAtOpen || e.n > 0
		}
	}
}
