// Package body reads callback bodies into pooled buffers that go back to
// the pool only once every reader handed out over them has been closed.
package body

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
)

// MaxPooled is the largest buffer kept for reuse; a callback
// body larger than this is read into a buffer of its own.
const MaxPooled = 256 << 10

// pool holds buffers for callback bodies (*[]byte), so that a
// steady stream of callbacks does not allocate, and make the garbage
// collector sweep, a body-sized buffer for each.
var pool = sync.Pool{
	New: func() any {
		b := make([]byte, 0, 32<<10)
		return &b
	},
}

// Buffer is a callback's body, read whole into a pooled buffer, and
// the readers over it that the next handler is given. The buffer goes back
// to the pool only when the route is done with it and every reader has
// been closed: net/http's transport may still be writing a request body
// upstream after the handler that sent it has returned, and closes the
// body when it is done. A reader never closed (a next handler that does
// not read the body) keeps the buffer out of the pool, and the garbage
// collector takes it as usual.
type Buffer struct {
	buf []byte

	mu     sync.Mutex
	refs   int // the route's own, plus one per open reader
	pooled *[]byte
}

// Read reads all of r, at most limit bytes (sized by
// contentLength when known), into a buffer from the pool. The caller owns
// the returned body and must call Release once done with it.
func Read(w http.ResponseWriter, r io.ReadCloser, contentLength, limit int64) (*Buffer, error) {
	size := int64(bytes.MinRead)
	if contentLength > 0 {
		size = contentLength + 1 // room to see EOF without growing
	}
	b := &Buffer{refs: 1}
	var buf []byte
	if size <= MaxPooled {
		b.pooled = pool.Get().(*[]byte)
		buf = (*b.pooled)[:0]
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, 0, size)
	}
	lr := http.MaxBytesReader(w, r, limit)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			b.buf = buf
			b.Release()
			return nil, err
		}
	}
	b.buf = buf
	return b, nil
}

// Bytes returns the body; it is valid until Release. Its capacity ends
// with it, so that no append or reslice reaches the rest of the pooled
// buffer, which holds bytes of earlier bodies.
func (b *Buffer) Bytes() []byte { return b.buf[:len(b.buf):len(b.buf)] }

// Reader returns a new reader of the body, which holds the buffer until
// it is closed. Once the last hold is dropped (the route's Release and
// every reader closed), it fails.
func (b *Buffer) Reader() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refs == 0 {
		return nil, ErrReleased
	}
	b.refs++
	cr := &reader{body: b}
	cr.r.Reset(b.buf)
	return cr, nil
}

// Release drops one hold on the buffer; the last returns it to the pool.
func (b *Buffer) Release() {
	b.mu.Lock()
	if b.refs == 0 { // one release too many: never pool a buffer twice
		b.mu.Unlock()
		return
	}
	b.refs--
	done := b.refs == 0
	pooled := b.pooled
	if done {
		b.pooled = nil
	}
	b.mu.Unlock()
	if !done || pooled == nil {
		return
	}
	if cap(b.buf) <= MaxPooled {
		*pooled = b.buf[:0]
	}
	pool.Put(pooled)
}

// ErrReleased is a reader asked of a body already released.
var ErrReleased = errors.New("the callback body has been released")

// reader reads a Buffer. net/http may close a request
// body from one goroutine while another reads it; a Close during a read
// (or a WriteTo, which may last as long as a slow upstream takes) only
// marks the reader closed, and the read that is under way drops the hold
// on the buffer when it ends, so the buffer is never read once back in the
// pool. Reads after Close fail.
type reader struct {
	body *Buffer
	r    bytes.Reader

	mu     sync.Mutex
	busy   int // Reads and WriteTos under way
	closed bool
}

func (cr *reader) Read(p []byte) (int, error) {
	if !cr.begin() {
		return 0, http.ErrBodyReadAfterClose
	}
	defer cr.end()
	return cr.r.Read(p)
}

// WriteTo lets io.Copy write the body in one call, without a copy buffer,
// for a next handler that copies the body itself (Caddy's reverse_proxy
// wraps the body, and net/http then reads it through a copy buffer).
func (cr *reader) WriteTo(w io.Writer) (int64, error) {
	if !cr.begin() {
		return 0, http.ErrBodyReadAfterClose
	}
	defer cr.end()
	return cr.r.WriteTo(w)
}

// begin marks a read under way; it reports false once the reader is closed.
func (cr *reader) begin() bool {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.closed {
		return false
	}
	cr.busy++
	return true
}

// end marks the read over, and, if the reader was closed meanwhile, the
// last read to end drops the hold on the buffer.
func (cr *reader) end() {
	cr.mu.Lock()
	cr.busy--
	last := cr.closed && cr.busy == 0
	cr.mu.Unlock()
	if last {
		cr.body.Release()
	}
}

// Close marks the reader closed and drops its hold on the buffer, at once
// or, during a read, when that read ends. It never waits.
func (cr *reader) Close() error {
	cr.mu.Lock()
	if cr.closed {
		cr.mu.Unlock()
		return nil
	}
	cr.closed = true
	busy := cr.busy > 0
	cr.mu.Unlock()
	if !busy {
		cr.body.Release()
	}
	return nil
}
