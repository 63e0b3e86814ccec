package payload

// Filter and Split rewrite a callback body by bytes: the kept elements of
// data, the members around data and whatever lies between them are copied
// as they are, never decoded and encoded again, so that what is computed
// on the bytes of an element (masking, signatures, ids) is the same in
// the rewritten body. Only the separators between kept elements change:
// each is a single comma. page, per_page, total_pages, total_items,
// has_next and has_prev are left as Atlas sent them: they describe the
// batch and its pages at Atlas (total_items counts documents still
// pending, which data may omit), not the length of data, and a body that
// keeps every element stays byte for byte the body Atlas sent. A
// consumer counts the elements of data.

// Filter returns body with its data array holding only the elements for
// which keep returns true; keep is called once for each element of docs,
// in order, with its index. docs must be what Documents returned for body
// (Filter panics on docs it can tell are not). When every element is
// kept, Filter returns body itself; otherwise a new slice of the exact
// size, its only allocation for up to 1024 elements. When none is kept,
// data is empty. Neither body nor docs is modified.
func Filter(body []byte, docs []Document, keep func(i int, d Document) bool) []byte {
	checkDocuments(body, docs)
	var small [16]uint64
	kept := small[:]
	if w := (len(docs) + 63) / 64; w > len(kept) {
		kept = make([]uint64, w)
	}
	count, size := 0, 0
	for i, d := range docs {
		if keep(i, d) {
			kept[i/64] |= 1 << (i % 64)
			count++
			size += d.End - d.Start
		}
	}
	if count == len(docs) {
		return body
	}
	prefix, suffix := body[:docs[0].Start], body[docs[len(docs)-1].End:]
	out := make([]byte, 0, len(prefix)+size+max(count-1, 0)+len(suffix))
	out = append(out, prefix...)
	first := true
	for i, d := range docs {
		if kept[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, body[d.Start:d.End]...)
	}
	return append(out, suffix...)
}

// Group is one body of those Split makes.
type Group[K comparable] struct {
	// Key is the key its elements share.
	Key K
	// Indexes are its elements' indexes in docs, in order.
	Indexes []int
	// Body is the callback body with these elements in data: see Filter.
	Body []byte
}

// Split makes one body for each key that key returns, in the order the
// keys are first seen, each as Filter would make it with the elements of
// that key (and Indexes naming them). key is called once for each element
// of docs, in order, with its index; it returns false to leave the
// element out of every body. docs must be what Documents returned for
// body (Split panics on docs it can tell are not). A key that has no
// element makes no body: no element, no body at all. When one body holds
// every element, it is body itself; otherwise the bodies share one
// allocation of their exact total size (each is capped at its own end,
// so that appending to one cannot overwrite the next). Neither body nor
// docs is modified.
func Split[K comparable](body []byte, docs []Document, key func(i int, d Document) (K, bool)) []Group[K] {
	checkDocuments(body, docs)
	if len(docs) == 0 {
		return nil
	}
	type tally struct{ count, size int }
	var (
		groups  []Group[K]
		tallies []tally
		index   map[K]int // once there are more groups than a scan suits
		of      = make([]int, len(docs))
		total   int // elements kept
	)
	for i, d := range docs {
		k, ok := key(i, d)
		if !ok {
			of[i] = -1
			continue
		}
		g := -1
		if index != nil {
			if j, found := index[k]; found {
				g = j
			}
		} else {
			for j := range groups {
				if groups[j].Key == k {
					g = j
					break
				}
			}
		}
		if g < 0 {
			g = len(groups)
			groups = append(groups, Group[K]{Key: k})
			tallies = append(tallies, tally{})
			if index != nil {
				index[k] = g
			} else if len(groups) > 8 {
				index = make(map[K]int, 2*len(groups))
				for j := range groups {
					index[groups[j].Key] = j
				}
			}
		}
		of[i] = g
		tallies[g].count++
		tallies[g].size += d.End - d.Start
		total++
	}
	indexes := make([]int, 0, total)
	if len(groups) == 1 && total == len(docs) {
		for i := range docs {
			indexes = append(indexes, i)
		}
		groups[0].Indexes, groups[0].Body = indexes, body
		return groups
	}
	prefix, suffix := body[:docs[0].Start], body[docs[len(docs)-1].End:]
	size := 0
	for _, t := range tallies {
		size += len(prefix) + t.size + t.count - 1 + len(suffix)
	}
	buf := make([]byte, size)
	off, ioff := 0, 0
	for g, t := range tallies {
		n := len(prefix) + t.size + t.count - 1 + len(suffix)
		groups[g].Body = append(buf[off:off:off+n], prefix...)
		groups[g].Indexes = indexes[ioff : ioff : ioff+t.count]
		off += n
		ioff += t.count
	}
	for i, d := range docs {
		if of[i] < 0 {
			continue
		}
		g := &groups[of[i]]
		if len(g.Indexes) > 0 {
			g.Body = append(g.Body, ',')
		}
		g.Body = append(g.Body, body[d.Start:d.End]...)
		g.Indexes = append(g.Indexes, i)
	}
	for g := range groups {
		groups[g].Body = append(groups[g].Body, suffix...)
	}
	return groups
}

// checkDocuments panics if docs cannot be the Documents of body: each
// element must be an object within body, after the previous one and
// apart from it only by white space and a comma.
func checkDocuments(body []byte, docs []Document) {
	prev := -1
	for _, d := range docs {
		ok := d.Start > prev && d.Start < d.End && d.End <= len(body) &&
			body[d.Start] == '{' && body[d.End-1] == '}'
		if ok && prev >= 0 {
			i := skipPayloadSpace(body, prev)
			ok = i < d.Start && body[i] == ',' && skipPayloadSpace(body, i+1) == d.Start
		}
		if !ok {
			panic("payload: the documents are not those of the body")
		}
		prev = d.End
	}
}
