package body

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReadCallbackBody checks that bodies of every size around the pooled
// buffer's come back whole, with and without a Content-Length, and that
// the limit holds.
func TestReadCallbackBody(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 32<<10 - 1, 32 << 10, 32<<10 + 1, MaxPooled, MaxPooled + 1, 1 << 20} {
		want := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
		for _, cl := range []int64{int64(n), -1} {
			w := httptest.NewRecorder()
			b, err := Read(w, io.NopCloser(bytes.NewReader(want)), cl, 1<<20)
			if err != nil {
				t.Fatalf("%d bytes, Content-Length %d: %v", n, cl, err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("%d bytes, Content-Length %d: read %d bytes, not the body", n, cl, len(b.Bytes()))
			}
			b.Release()
		}
	}
	w := httptest.NewRecorder()
	_, err := Read(w, io.NopCloser(strings.NewReader(strings.Repeat("x", 101))), -1, 100)
	if !errors.As(err, new(*http.MaxBytesError)) {
		t.Errorf("101 bytes with a limit of 100: %v, want a MaxBytesError", err)
	}
}

// TestCallbackBodyHolds checks when the buffer may go back to the pool:
// only once the route has released it and every reader is closed.
func TestCallbackBodyHolds(t *testing.T) {
	b, err := Read(httptest.NewRecorder(), io.NopCloser(strings.NewReader(`{"data":[]}`)), 11, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := b.Reader()
	r2, _ := b.Reader() // as GetBody would
	b.Release()
	if b.pooled == nil {
		t.Fatal("the buffer went back to the pool while two readers were open")
	}
	got, err := io.ReadAll(r1)
	if err != nil || string(got) != `{"data":[]}` {
		t.Fatalf("read %q, %v", got, err)
	}
	_ = r1.Close()
	_ = r1.Close() // a second Close drops nothing more
	if b.pooled == nil {
		t.Fatal("the buffer went back to the pool while a reader was open")
	}
	_ = r2.Close()
	if b.pooled != nil || b.refs != 0 {
		t.Fatalf("after the last Close: refs %d, still held: %v", b.refs, b.pooled != nil)
	}
	if _, err := r1.Read(make([]byte, 1)); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := r2.(io.WriterTo).WriteTo(io.Discard); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("WriteTo after Close: %v", err)
	}
	if _, err := b.Reader(); err == nil {
		t.Error("a reader of a released body")
	}
	b.Release() // one too many: ignored
	if b.refs != 0 {
		t.Errorf("refs %d after an extra release", b.refs)
	}
}

// blockingWriter is an upstream that takes its first write only when
// released.
type blockingWriter struct {
	started, release chan struct{}
}

func (w blockingWriter) Write(p []byte) (int, error) {
	close(w.started)
	<-w.release
	return len(p), nil
}

// TestCallbackBodyCloseDuringWrite checks that a Close during a slow
// WriteTo returns at once, and that the buffer stays held until the
// write ends.
func TestCallbackBodyCloseDuringWrite(t *testing.T) {
	b, err := Read(httptest.NewRecorder(), io.NopCloser(strings.NewReader(`{"data":[]}`)), 11, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	rd, _ := b.Reader()
	w := blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	wrote := make(chan error)
	go func() {
		_, err := rd.(io.WriterTo).WriteTo(w)
		wrote <- err
	}()
	<-w.started
	closed := make(chan struct{})
	go func() {
		_ = rd.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the write")
	}
	b.Release()
	if b.pooled == nil {
		t.Fatal("the buffer went back to the pool during a write")
	}
	close(w.release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	refs, held := b.refs, b.pooled != nil
	b.mu.Unlock()
	if refs != 0 || held {
		t.Fatalf("after the write: refs %d, still held %v", refs, held)
	}
}

// TestCallbackBodyNotReusedWhileRead reads bodies from other goroutines,
// as net/http's transport does, while the route releases them and new
// bodies are read into pooled buffers: every reader must see its own body
// whole or fail after its Close, never another's bytes. Run with -race,
// any reuse of a buffer being read is also a reported race.
func TestCallbackBodyNotReusedWhileRead(t *testing.T) {
	const rounds = 2000
	var wg sync.WaitGroup
	errs := make(chan error, 2*rounds)
	for i := range rounds {
		want := bytes.Repeat([]byte{byte('a' + i%26)}, 40<<10)
		b, err := Read(httptest.NewRecorder(), io.NopCloser(bytes.NewReader(want)), int64(len(want)), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		rd, _ := b.Reader()
		wg.Add(3)
		var read bytes.Buffer
		done := make(chan struct{})
		go func() {
			defer wg.Done()
			defer close(done)
			var err error
			if i%2 == 0 {
				_, err = io.Copy(&read, rd)
			} else {
				_, err = io.Copy(&read, struct{ io.Reader }{rd}) // Read, not WriteTo
			}
			if err != nil && !errors.Is(err, http.ErrBodyReadAfterClose) {
				errs <- err
			}
		}()
		go func() { // a Close racing the reads, as on a cancelled request
			defer wg.Done()
			if i%3 == 0 {
				_ = rd.Close()
			}
		}()
		b.Release() // the route returns at once
		go func() {
			defer wg.Done()
			<-done
			_ = rd.Close()
			if !bytes.Equal(read.Bytes(), want[:read.Len()]) {
				errs <- errors.New("a reader saw bytes of another body")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
