package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const (
	segmentExt = ".seg"
	tmpExt     = ".tmp"
	lockName   = "LOCK"
)

// segment is one log file. The writer appends to the newest; the others
// are immutable until compaction replaces them.
type segment struct {
	id   uint64
	path string
	f    *os.File
	// size is the file's length in bytes.
	size atomic.Int64

	// refs counts the readers of f; a dropped segment's file is closed
	// when the last one is done. Both are guarded by FileSpool.segMu.
	refs    int
	dropped bool

	// The fields below are guarded by FileSpool.mu.
	//
	// purgeDue is when the segment must be compacted, because it holds
	// a body let go (retention.go); zero if it holds none.
	purgeDue time.Time
	// clean is the epoch of the compaction that wrote the segment, 0 for
	// one the writer wrote: a segment whose clean is at least a ghost's
	// epoch holds no record that could bring its callback back.
	clean uint64
	// letGoAtOpen is set by a replay that finds a body let go in it.
	letGoAtOpen bool
}

func segmentName(id uint64) string {
	return fmt.Sprintf("%016x%s", id, segmentExt)
}

// listSegments returns the segment ids in dir, ascending, and removes
// leftover temporary files of an interrupted compaction.
func listSegments(dir string) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, tmpExt) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			continue
		}
		base, ok := strings.CutSuffix(name, segmentExt)
		if !ok || len(base) != 16 || !de.Type().IsRegular() {
			continue
		}
		id, err := strconv.ParseUint(base, 16, 64)
		if err != nil || id == 0 {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// syncDir fsyncs a directory, making file creations, renames and
// removals in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordReader reads records at given offsets of a segment file.
type recordReader struct {
	r    io.ReaderAt
	size int64
	buf  []byte
}

// at reads and decodes the record at off. The record's Body aliases an
// internal buffer, valid until the next call. Errors wrapping ErrCorrupt
// or io.ErrUnexpectedEOF are about the bytes; any other is an I/O error.
func (rr *recordReader) at(off int64) (Record, int64, error) {
	if rr.size-off < headerSize {
		return Record{}, 0, io.ErrUnexpectedEOF
	}
	var hdr [headerSize]byte
	if _, err := rr.r.ReadAt(hdr[:], off); err != nil {
		return Record{}, 0, err
	}
	if !bytes.Equal(hdr[:len(magic)], magic[:]) {
		return Record{}, 0, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	n := int64(binary.LittleEndian.Uint32(hdr[8:12]))
	if n > maxPayload {
		return Record{}, 0, fmt.Errorf("%w: payload length %d", ErrCorrupt, n)
	}
	total := headerSize + n
	if rr.size-off < total {
		return Record{}, 0, io.ErrUnexpectedEOF
	}
	if int64(cap(rr.buf)) < total {
		rr.buf = make([]byte, total)
	}
	b := rr.buf[:total]
	if _, err := rr.r.ReadAt(b, off); err != nil {
		return Record{}, 0, err
	}
	rec, _, err := DecodeRecord(b)
	return rec, total, err
}

// resync returns the offset of the first valid record at or after from,
// or -1 if there is none.
func (rr *recordReader) resync(from int64) (int64, error) {
	chunk := make([]byte, 64<<10)
	for pos := from; pos < rr.size; {
		n, err := rr.r.ReadAt(chunk[:min(int64(len(chunk)), rr.size-pos)], pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return -1, err
		}
		for i := 0; ; {
			j := bytes.Index(chunk[i:n], magic[:])
			if j < 0 {
				break
			}
			cand := pos + int64(i+j)
			if _, _, err := rr.at(cand); err == nil {
				return cand, nil
			} else if isIOError(err) {
				return -1, err
			}
			i += j + 1
		}
		if pos+int64(n) >= rr.size {
			break
		}
		// Overlap the chunks so that a magic across the boundary is seen.
		pos += int64(n - (len(magic) - 1))
	}
	return -1, nil
}

// isIOError reports whether err is a read failure rather than bad bytes.
func isIOError(err error) bool {
	return err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF)
}

// scanResult is what scanning a segment found.
type scanResult struct {
	// end is the offset just past the last valid record.
	end int64
	// skipped counts corrupt records skipped before end.
	skipped int
	// torn is true if the bytes after end are not a valid record.
	torn bool
}

// scan calls fn for each valid record of the segment, in order. A corrupt
// record followed by valid ones is skipped; invalid bytes with no valid
// record after them (a torn write) end the scan.
func scan(r io.ReaderAt, size int64, fn func(rec *Record, off, n int64), warn func(msg string, off, n int64, err error)) (scanResult, error) {
	rr := &recordReader{r: r, size: size}
	var res scanResult
	for off := int64(0); off < size; {
		rec, n, err := rr.at(off)
		if err == nil {
			fn(&rec, off, n)
			off += n
			res.end = off
			continue
		}
		if isIOError(err) {
			return res, err
		}
		next, rerr := rr.resync(off + 1)
		if rerr != nil {
			return res, rerr
		}
		if next < 0 {
			warn("torn record at the end of a segment", off, size-off, err)
			res.torn = true
			break
		}
		warn("corrupt record skipped", off, next-off, err)
		res.skipped++
		off = next
	}
	return res, nil
}

// isBase reports whether the segment file starts with a valid base
// record: it is the product of a compaction.
func isBase(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var hdr [headerSize]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil || RecordType(hdr[12]) != RecordBase {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	rr := &recordReader{r: f, size: fi.Size()}
	rec, _, err := rr.at(0)
	return err == nil && rec.Type == RecordBase
}
