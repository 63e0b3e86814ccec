package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/seal"
	"github.com/caddy-atlas/caddy-atlas/spool"
)

// BenchmarkSpoolSealed measures what encryption at rest costs the
// durable spool: concurrent acknowledged appends of distinct 16 KiB
// callbacks (each fsynced, group commit), without a key (the baseline)
// and with one (AES-256-GCM of headers and body), in the same run;
// then the same for Load, which reads a callback back (and opens it):
//
//	go test -run xxx -bench BenchmarkSpoolSealed -benchtime 3s -count 3 ./bench/
func BenchmarkSpoolSealed(b *testing.B) {
	key := make([]byte, seal.KeySize)
	_, _ = rand.Read(key)
	kr, err := seal.NewKeyring(key)
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte(`{"aadhaar_number":{"value":"2345 6789 0123"}},`), 16<<10/46)
	header := http.Header{"Content-Type": {"application/json"}, "X-Atlas-Subject": {"client-1"}}
	for _, side := range []struct {
		name string
		kr   *seal.Keyring
	}{{"plain", nil}, {"sealed", kr}} {
		b.Run("append/"+side.name, func(b *testing.B) {
			s, err := spool.Open(b.TempDir(), spool.Options{Keyring: side.kr, MaxDiskBytes: 1 << 40})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			var n atomic.Int64
			b.SetBytes(int64(len(body)))
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					e := queue.Entry{ID: fmt.Sprintf("bench-%d", n.Add(1)), Header: header, Body: body}
					if _, err := s.Append(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run("load/"+side.name, func(b *testing.B) {
			s, err := spool.Open(b.TempDir(), spool.Options{Keyring: side.kr})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close(context.Background())
			const stored = 256
			for i := range stored {
				if _, err := s.Append(context.Background(), queue.Entry{ID: fmt.Sprintf("bench-%d", i), Header: header, Body: body}); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.Load(context.Background(), fmt.Sprintf("bench-%d", i%stored)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
