package payload

import (
	"testing"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
)

// BenchmarkDocuments compares Documents with Validate on a 16 KiB and a
// 1 MiB payload, and measures Filter (every other element kept) and
// Split (three groups) on the documents found. MB/s is payload bytes.
func BenchmarkDocuments(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"16KiB", 16 << 10}, {"1MiB", 1 << 20}} {
		body := payloadtest.Realistic(size.n)
		docs, err := Documents(body)
		if err != nil {
			b.Fatal(err)
		}
		run := func(name string, f func() error) {
			b.Run(size.name+"/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if err := f(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		run("Validate", func() error { _, err := Validate(body); return err })
		run("Documents", func() error { _, err := Documents(body); return err })
		run("Filter", func() error {
			_ = Filter(body, docs, func(i int, _ Document) bool { return i%2 == 0 })
			return nil
		})
		run("Split", func() error {
			_ = Split(body, docs, func(i int, _ Document) (int, bool) { return i % 3, true })
			return nil
		})
	}
}
