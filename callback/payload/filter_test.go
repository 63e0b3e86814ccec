package payload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/callback/payload/payloadtest"
)

func TestFilter(t *testing.T) {
	const (
		a = `{"document_id":"a","file_data":{"x":{"value":"1","confidence_score":0.5}}}`
		b = `{"document_id":"b"}`
		c = `{"document_id":"c","error_code":"UNRECOGNISED"}`
		n = `{"document_id":"n","file_data":{"data":[{"document_id":"a"}],"y":{"data":{"document_id":"b"}}}}`
	)
	abc := `{"data":[` + a + `,` + b + `,` + c + `],"page":1,"per_page":50,"total_pages":1,"total_items":3,"has_next":false,"has_prev":false}`
	spaced := " {\n \"page\" : 1 ,\n \"data\" : [ \n  " + a + " ,\n  " + b + "\t,\t" + c + " \n ] ,\n \"total_items\" : 3 }\n"
	for _, tc := range []struct {
		name, body, keep, want string // keep: the ids kept
	}{
		{"drop the middle", abc, "ac", `{"data":[` + a + `,` + c + `],"page":1,"per_page":50,"total_pages":1,"total_items":3,"has_next":false,"has_prev":false}`},
		{"keep the first", abc, "a", `{"data":[` + a + `],"page":1,"per_page":50,"total_pages":1,"total_items":3,"has_next":false,"has_prev":false}`},
		{"keep the last", abc, "c", `{"data":[` + c + `],"page":1,"per_page":50,"total_pages":1,"total_items":3,"has_next":false,"has_prev":false}`},
		{"keep none", abc, "", `{"data":[],"page":1,"per_page":50,"total_pages":1,"total_items":3,"has_next":false,"has_prev":false}`},
		{"keep all", abc, "abc", abc},
		{"whitespace kept around data", spaced, "ac", " {\n \"page\" : 1 ,\n \"data\" : [ \n  " + a + "," + c + " \n ] ,\n \"total_items\" : 3 }\n"},
		{"whitespace, keep none", spaced, "", " {\n \"page\" : 1 ,\n \"data\" : [ \n   \n ] ,\n \"total_items\" : 3 }\n"},
		{"data in file_data and beside", `{"x":{"data":[1]},"data":[` + b + `,` + n + `],"y":{"data":[` + b + `]}}`, "n",
			`{"x":{"data":[1]},"data":[` + n + `],"y":{"data":[` + b + `]}}`},
		{"duplicate ids", `{"data":[` + a + `,` + b + `,` + a + `]}`, "b", `{"data":[` + b + `]}`},
		{"empty data", `{"data":[ ]}`, "", `{"data":[ ]}`},
		{"escaped data key", `{"d\u0061ta":[` + a + `,` + b + `]}`, "b", `{"d\u0061ta":[` + b + `]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			docs, err := Documents(body)
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			got := Filter(body, docs, func(i int, d Document) bool {
				if i != calls {
					t.Errorf("keep called with %d, want %d", i, calls)
				}
				calls++
				return strings.Contains(tc.keep, d.ID)
			})
			if calls != len(docs) {
				t.Errorf("keep called %d times for %d documents", calls, len(docs))
			}
			if string(got) != tc.want {
				t.Errorf("got\n  %s\nwant\n  %s", got, tc.want)
			}
			if string(body) != tc.body {
				t.Errorf("body modified")
			}
			checkFilter(t, body, docs, got, func(_ int, d Document) bool { return strings.Contains(tc.keep, d.ID) })
		})
	}
}

// TestFilterKeepAllNone is the property: keeping every element gives
// back the body itself; keeping none, the body with an empty data
// array and every other member as it was.
func TestFilterKeepAllNone(t *testing.T) {
	bodies := append(documentsSeeds(), string(payloadtest.Realistic(64<<10)), string(mixedPayload(40)))
	for _, body := range bodies {
		b := []byte(body)
		docs, err := Documents(b)
		if err != nil {
			continue
		}
		all := Filter(b, docs, func(int, Document) bool { return true })
		if len(b) > 0 && &all[0] != &b[0] {
			t.Errorf("body %q: keep-all made a copy", truncate(body, 200))
		}
		if !jsonEqual(t, all, b) {
			t.Errorf("body %q: keep-all gave %q", truncate(body, 200), truncate(string(all), 200))
		}
		none := Filter(b, docs, func(int, Document) bool { return false })
		if got, err := Documents(none); err != nil || len(got) != 0 {
			t.Errorf("body %q: keep-none gave %q: %v, %d documents", truncate(body, 200), truncate(string(none), 200), err, len(got))
		}
		if _, err := Validate(b); err == nil {
			if _, err := Validate(none); err != nil {
				t.Errorf("body %q: keep-none fails Validate: %v", truncate(body, 200), err)
			}
		}
		want := map[string]json.RawMessage{}
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		want["data"] = json.RawMessage(`[]`)
		wantJSON, _ := json.Marshal(want)
		if !jsonEqual(t, none, wantJSON) {
			t.Errorf("body %q: keep-none gave %q", truncate(body, 200), truncate(string(none), 200))
		}
		checkFilter(t, b, docs, none, func(int, Document) bool { return false })
	}
}

// jsonEqual reports whether two JSON texts decode to the same value.
func jsonEqual(t *testing.T, x, y []byte) bool {
	t.Helper()
	var vx, vy any
	if err := json.Unmarshal(x, &vx); err != nil {
		t.Fatalf("%q: %v", truncate(string(x), 200), err)
	}
	if err := json.Unmarshal(y, &vy); err != nil {
		t.Fatalf("%q: %v", truncate(string(y), 200), err)
	}
	return reflect.DeepEqual(vx, vy)
}

func TestFilterAllocations(t *testing.T) {
	for _, size := range []int{16 << 10, 1 << 20} {
		body := payloadtest.Realistic(size)
		docs, err := Documents(body)
		if err != nil {
			t.Fatal(err)
		}
		odd := func(i int, _ Document) bool { return i%2 == 1 }
		want := 1.0
		if len(docs) > 1024 {
			want = 2 // the bitmap of kept elements
		}
		if allocs := testing.AllocsPerRun(10, func() { _ = Filter(body, docs, odd) }); allocs > want {
			t.Errorf("%d documents: %v allocations, want %v", len(docs), allocs, want)
		}
	}
}

func TestFilterWrongDocuments(t *testing.T) {
	body := []byte(`{"data":[{"document_id":"a"}, {"document_id":"b"}]}`)
	docs, err := Documents(body)
	if err != nil {
		t.Fatal(err)
	}
	other := []byte(`{"data":[{"document_id":"a"},{"document_id":"b"}]}`)
	swapped := []Document{docs[1], docs[0]}
	for _, tc := range []struct {
		name string
		body []byte
		docs []Document
	}{
		{"another body", other, docs},
		{"out of order", body, swapped},
		{"past the end", body[:len(body)-5], docs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, run := range []func(){
				func() { Filter(tc.body, tc.docs, func(int, Document) bool { return false }) },
				func() { Split(tc.body, tc.docs, func(int, Document) (int, bool) { return 0, true }) },
			} {
				func() {
					defer func() {
						if recover() == nil {
							t.Error("no panic")
						}
					}()
					run()
				}()
			}
		})
	}
}

func TestSplit(t *testing.T) {
	body := []byte(` {"page":1, "data": [ {"document_id":"a1"}, {"document_id":"b1","file_data":{"x":1}},` +
		"\n" + `{"document_id":"a2","error_code":"UNRECOGNISED"} ,{"document_id":"c1"},{"document_id":"b2"} ], "total_items": 5} `)
	docs, err := Documents(body)
	if err != nil {
		t.Fatal(err)
	}
	groups := Split(body, docs, func(_ int, d Document) (string, bool) {
		return d.ID[:1], d.ID[0] != 'c'
	})
	want := []Group[string]{
		{"a", []int{0, 2}, []byte(` {"page":1, "data": [ {"document_id":"a1"},{"document_id":"a2","error_code":"UNRECOGNISED"} ], "total_items": 5} `)},
		{"b", []int{1, 4}, []byte(` {"page":1, "data": [ {"document_id":"b1","file_data":{"x":1}},{"document_id":"b2"} ], "total_items": 5} `)},
	}
	if !reflect.DeepEqual(groups, want) {
		t.Errorf("got\n  %s\nwant\n  %s", describeGroups(groups), describeGroups(want))
	}
	// Appending to a body does not reach into the next.
	before := string(groups[1].Body)
	_ = append(groups[0].Body, "xxxx"...)
	_ = append(groups[0].Indexes, 99)
	if string(groups[1].Body) != before || groups[1].Indexes[0] != 1 {
		t.Error("appending to a group's body or indexes changed the next one")
	}
	checkSplit(t, body, docs, groups, func(_ int, d Document) (string, bool) { return d.ID[:1], d.ID[0] != 'c' })

	// One group of every element: the body itself.
	one := Split(body, docs, func(int, Document) (bool, bool) { return true, true })
	if len(one) != 1 || &one[0].Body[0] != &body[0] || len(one[0].Body) != len(body) || !reflect.DeepEqual(one[0].Indexes, []int{0, 1, 2, 3, 4}) {
		t.Errorf("one group of all: %s", describeGroups(one))
	}
	// None kept; no documents.
	if g := Split(body, docs, func(int, Document) (int, bool) { return 0, false }); len(g) != 0 {
		t.Errorf("none kept: %s", describeGroups(g))
	}
	empty := []byte(`{"data":[]}`)
	if g := Split(empty, nil, func(int, Document) (int, bool) { return 0, true }); len(g) != 0 {
		t.Errorf("no documents: %s", describeGroups(g))
	}
}

// TestSplitManyGroups passes the number of groups that a scan finds, so
// that a map takes over, and checks the order of first sight.
func TestSplitManyGroups(t *testing.T) {
	body := payloadtest.Sample(60)
	docs, err := Documents(body)
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int, _ Document) (int, bool) { return (i * 7) % 20, i%11 != 3 }
	groups := Split(body, docs, key)
	if len(groups) != 20 {
		t.Fatalf("%d groups", len(groups))
	}
	if groups[0].Key != 0 || groups[1].Key != 7 || groups[3].Key != 8 { // 21 is left out
		t.Errorf("first keys %d, %d, %d, want 0, 7, 8", groups[0].Key, groups[1].Key, groups[3].Key)
	}
	checkSplit(t, body, docs, groups, key)
}

func describeGroups[K comparable](groups []Group[K]) string {
	var b strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&b, "\n    %v %v %s", g.Key, g.Indexes, g.Body)
	}
	return b.String()
}

// checkFilter checks Filter's output: valid JSON whose elements of data
// are byte for byte the kept ones of body, whose bytes around data are
// those of body, and which Validate accepts if it accepts body.
func checkFilter(t *testing.T, body []byte, docs []Document, out []byte, keep func(int, Document) bool) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("body %q: output %q is not valid JSON", truncate(string(body), 200), truncate(string(out), 200))
	}
	got, err := Documents(out)
	if err != nil {
		t.Fatalf("body %q: output %q: %v", truncate(string(body), 200), truncate(string(out), 200), err)
	}
	var kept []Document
	for i, d := range docs {
		if keep(i, d) {
			kept = append(kept, d)
		}
	}
	if len(got) != len(kept) {
		t.Fatalf("body %q: output has %d documents, want %d", truncate(string(body), 200), len(got), len(kept))
	}
	for i, d := range got {
		k := kept[i]
		if !bytes.Equal(out[d.Start:d.End], body[k.Start:k.End]) {
			t.Fatalf("body %q: element %d is %q, want %q", truncate(string(body), 200), i, out[d.Start:d.End], body[k.Start:k.End])
		}
		if d.ID != k.ID || d.ErrorCode != k.ErrorCode || d.Extracted != k.Extracted || d.Available != k.Available {
			t.Fatalf("element %d: %+v, was %+v", i, d, k)
		}
	}
	if len(docs) > 0 && len(kept) < len(docs) {
		prefix, suffix := body[:docs[0].Start], body[docs[len(docs)-1].End:]
		if !bytes.HasPrefix(out, prefix) || !bytes.HasSuffix(out, suffix) {
			t.Fatalf("body %q: output %q does not keep the bytes around data", truncate(string(body), 200), truncate(string(out), 200))
		}
	}
	if len(kept) == len(docs) && !bytes.Equal(out, body) {
		t.Fatalf("body %q: all kept, output %q", truncate(string(body), 200), truncate(string(out), 200))
	}
	if _, err := Validate(body); err == nil {
		if _, err := Validate(out); err != nil {
			t.Fatalf("body %q: output %q fails Validate: %v", truncate(string(body), 200), truncate(string(out), 200), err)
		}
	}
}

// checkSplit checks that each group's body is what Filter makes of its
// elements, that the groups come in the order their keys are first seen
// and that they hold every element kept, once.
func checkSplit[K comparable](t *testing.T, body []byte, docs []Document, groups []Group[K], key func(int, Document) (K, bool)) {
	t.Helper()
	var order []K
	members := map[K][]int{}
	for i, d := range docs {
		k, ok := key(i, d)
		if !ok {
			continue
		}
		if _, seen := members[k]; !seen {
			order = append(order, k)
		}
		members[k] = append(members[k], i)
	}
	if len(groups) != len(order) {
		t.Fatalf("body %q: %d groups, want %d", truncate(string(body), 200), len(groups), len(order))
	}
	for g, grp := range groups {
		if grp.Key != order[g] || !reflect.DeepEqual(grp.Indexes, members[order[g]]) {
			t.Fatalf("body %q: group %d is %v %v, want %v %v", truncate(string(body), 200), g, grp.Key, grp.Indexes, order[g], members[order[g]])
		}
		in := map[int]bool{}
		for _, i := range grp.Indexes {
			in[i] = true
		}
		want := Filter(body, docs, func(i int, _ Document) bool { return in[i] })
		if !bytes.Equal(grp.Body, want) {
			t.Fatalf("body %q: group %v body %q, Filter %q", truncate(string(body), 200), grp.Key, truncate(string(grp.Body), 200), truncate(string(want), 200))
		}
		checkFilter(t, body, docs, grp.Body, func(i int, _ Document) bool { return in[i] })
	}
}

// FuzzFilter checks Filter and Split on the bodies Documents accepts,
// keeping the elements that mask selects (bit i%64 for element i) and
// grouping them by two bits of it (3: left out). Seeds:
// testdata/fuzz/FuzzFilter, and documentsSeeds with a few masks.
func FuzzFilter(f *testing.F) {
	for i, body := range documentsSeeds() {
		f.Add([]byte(body), uint64(0x5555_5555_5555_5555)*uint64(i%3))
	}
	f.Fuzz(func(t *testing.T, body []byte, mask uint64) {
		docs, err := Documents(body)
		if err != nil {
			return
		}
		bit := func(i int) bool { return mask>>(i%64)&1 == 1 }
		out := Filter(body, docs, func(i int, _ Document) bool { return bit(i) })
		checkFilter(t, body, docs, out, func(i int, _ Document) bool { return bit(i) })
		key := func(i int, _ Document) (uint64, bool) {
			k := mask >> (2 * (i % 32)) & 3
			return k, k != 3
		}
		checkSplit(t, body, docs, Split(body, docs, key), key)
	})
}
