// Package payload checks that a callback body is an Atlas extraction
// payload, in one pass and without building a tree of it (Validate),
// lists its documents with their places in the body (Documents), and
// rewrites a body by bytes to hold only some of them (Filter), or one
// body per group of them (Split). It knows nothing of Caddy or HTTP.
package payload

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxPayloadDepth is the deepest nesting of a callback payload, as in
// encoding/json.
const maxPayloadDepth = 10000

// Error is a callback body that is not an Atlas extraction payload. Its
// message names the first offending JSON path, e.g.
// `data[3].file_data.pan_number.confidence_score: 1.7 is outside [0, 1]`,
// or `body` for the body as a whole.
type Error struct {
	path string
	msg  string
}

func (e *Error) Error() string {
	return e.path + ": " + e.msg
}

// Validate checks, in one pass over body (a value found wrong is read
// again, to name the error) and without building any tree of it, that
// body is valid UTF-8 and holds exactly one JSON object (RFC 8259) whose
// `data` is an array of documents, each an object with a non-empty string `document_id` and an object
// `file_data`, and that every `confidence_score`, wherever it is, is a
// number in [0, 1]. Other keys are allowed. A duplicate of a key it
// checks (data, document_id, file_data, confidence_score) in one object
// is refused, so that no JSON parser behind it can read another value
// than the one checked; keys are compared after unescaping. It returns
// the number of documents.
func Validate(body []byte) (int, error) {
	if !utf8.Valid(body) {
		return 0, &Error{path: "body", msg: "not valid UTF-8"}
	}
	var path [16]payloadPathElem
	s := payloadScanner{buf: body, path: path[:0]}
	return s.payload()
}

// payloadScanner is a JSON scanner over a payload that keeps the path of
// the current value for error messages.
type payloadScanner struct {
	buf   []byte
	pos   int
	depth int
	path  []payloadPathElem

	// collect says that Documents runs the scan: the elements of data
	// are read by element, which gathers them in docs, instead of
	// document.
	collect bool
	docs    []Document
}

// payloadPathElem is a step of a JSON path: an array index, or an object
// key held as its place in the body, buf[start:end], as written there. It
// holds no pointer, so that pushing one costs no more than a copy.
type payloadPathElem struct {
	index      int // -1 for a key
	start, end int
	escaped    bool
}

// The keys the validator checks.
const (
	payloadKeyOther = iota
	payloadKeyData
	payloadKeyDocumentID
	payloadKeyFileData
	payloadKeyScore
)

// classifyPayloadKey returns which checked key, if any, a raw key is.
func classifyPayloadKey(raw []byte, escaped bool) int {
	if escaped {
		return classifyPayloadKeyName([]byte(unescapePayloadKey(raw)))
	}
	return classifyPayloadKeyName(raw)
}

// classifyPayloadKeyName returns which checked key, if any, k is. The
// comparisons convert nothing.
func classifyPayloadKeyName(k []byte) int {
	switch {
	case string(k) == "data":
		return payloadKeyData
	case string(k) == "document_id":
		return payloadKeyDocumentID
	case string(k) == "file_data":
		return payloadKeyFileData
	case string(k) == "confidence_score":
		return payloadKeyScore
	}
	return payloadKeyOther
}

// unescapePayloadKey decodes a key that holds escapes; the scanner has checked
// its syntax.
func unescapePayloadKey(raw []byte) string {
	var s string
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	_ = json.Unmarshal(quoted, &s)
	return s
}

func (s *payloadScanner) payload() (int, error) {
	s.ws()
	if s.pos == len(s.buf) {
		return 0, &Error{path: "body", msg: "empty; expected a JSON object"}
	}
	if s.buf[s.pos] != '{' {
		return 0, s.typeError("must be a JSON object, not %s")
	}
	if err := s.open(); err != nil {
		return 0, err
	}
	docs, seen := 0, 0
	for first := true; ; {
		more, err := s.more(&first, '}')
		if err != nil {
			return 0, err
		}
		if !more {
			break
		}
		key, err := s.key(&seen)
		if err != nil {
			return 0, err
		}
		if key == payloadKeyData {
			docs, err = s.data()
		} else {
			err = s.skip(key == payloadKeyScore)
		}
		if err != nil {
			return 0, err
		}
		s.pop()
	}
	if seen&(1<<payloadKeyData) == 0 {
		return 0, s.missing("data", "expected an array of documents")
	}
	s.ws()
	if s.pos != len(s.buf) {
		return 0, &Error{path: "body", msg: "unexpected data after the JSON object"}
	}
	return docs, nil
}

// data checks the data array and returns its length.
func (s *payloadScanner) data() (int, error) {
	s.ws()
	if s.pos >= len(s.buf) {
		return 0, s.truncated()
	}
	if s.buf[s.pos] != '[' {
		return 0, s.typeError("must be an array of documents, not %s")
	}
	if err := s.open(); err != nil {
		return 0, err
	}
	n := 0
	for first := true; ; n++ {
		more, err := s.more(&first, ']')
		if err != nil {
			return 0, err
		}
		if !more {
			return n, nil
		}
		s.path = append(s.path, payloadPathElem{index: n})
		if s.collect {
			err = s.element()
		} else {
			err = s.document()
		}
		if err != nil {
			return 0, err
		}
		s.pop()
	}
}

// document checks one element of data.
func (s *payloadScanner) document() error {
	s.ws()
	if s.pos >= len(s.buf) {
		return s.truncated()
	}
	if s.buf[s.pos] != '{' {
		return s.typeError("must be a document object, not %s")
	}
	if err := s.open(); err != nil {
		return err
	}
	seen := 0
	for first := true; ; {
		more, err := s.more(&first, '}')
		if err != nil {
			return err
		}
		if !more {
			break
		}
		key, err := s.key(&seen)
		if err != nil {
			return err
		}
		switch key {
		case payloadKeyDocumentID:
			if _, _, err := s.documentID(); err != nil {
				return err
			}
		case payloadKeyFileData:
			s.ws()
			if s.pos >= len(s.buf) {
				return s.truncated()
			}
			if s.buf[s.pos] != '{' {
				return s.typeError("must be an object, not %s")
			}
			if err := s.skip(false); err != nil {
				return err
			}
		default:
			if err := s.skip(key == payloadKeyScore); err != nil {
				return err
			}
		}
		s.pop()
	}
	for _, k := range []struct {
		bit  int
		name string
	}{{payloadKeyDocumentID, "document_id"}, {payloadKeyFileData, "file_data"}} {
		if seen&(1<<k.bit) == 0 {
			return s.missing(k.name, "")
		}
	}
	return nil
}

// key reads an object member's key and colon, pushes the key on the
// path, and returns which checked key it is; a checked key already in
// seen is a duplicate.
func (s *payloadScanner) key(seen *int) (int, error) {
	if s.buf[s.pos] != '"' {
		return 0, s.syntaxError("expected a string for an object key")
	}
	start := s.pos + 1
	raw, escaped, err := s.str()
	if err != nil {
		return 0, err
	}
	s.path = append(s.path, payloadPathElem{index: -1, start: start, end: start + len(raw), escaped: escaped})
	s.ws()
	if s.pos >= len(s.buf) {
		return 0, s.truncated()
	}
	if s.buf[s.pos] != ':' {
		return 0, s.syntaxError("expected ':' after an object key")
	}
	s.pos++
	k := classifyPayloadKey(raw, escaped)
	if k != payloadKeyOther {
		if *seen&(1<<k) != 0 {
			return 0, s.errorf("duplicate key")
		}
		*seen |= 1 << k
	}
	return k, nil
}

// more is called before each member of an object or element of an array
// (after its opening byte): it reports whether one follows, consuming
// the comma before it or the closing byte.
func (s *payloadScanner) more(first *bool, closing byte) (bool, error) {
	s.ws()
	if s.pos >= len(s.buf) {
		return false, s.truncated()
	}
	c := s.buf[s.pos]
	if c == closing {
		s.pos++
		s.depth--
		return false, nil
	}
	if !*first {
		if c != ',' {
			return false, s.syntaxError(fmt.Sprintf("expected ',' or '%c'", closing))
		}
		s.pos++
		s.ws()
		if s.pos >= len(s.buf) {
			return false, s.truncated()
		}
	}
	*first = false
	return true, nil
}

// open consumes the opening byte of an object or array.
func (s *payloadScanner) open() error {
	s.pos++
	s.depth++
	if s.depth > maxPayloadDepth {
		return s.errorf("nested deeper than %d levels", maxPayloadDepth)
	}
	return nil
}

// skip checks a value the schema does not look into except for its
// confidence_scores (score says it is one), on the fast path of
// skipPayloadValue; where that stops, value scans it again to say what
// is wrong and where.
func (s *payloadScanner) skip(score bool) error {
	if end, ok := skipPayloadValue(s.buf, s.pos, s.depth, score); ok {
		s.pos = end
		return nil
	}
	return s.value(score)
}

// skipPayloadValue returns the end of the JSON value at or after b[i],
// nested depth deep (score says it is a confidence_score), if it passes
// value's checks; ok is false at the first thing it does not accept, and
// its end is then meaningless. It is value without the path, the error
// messages and the pointer to the scanner, which takes a quarter off the
// scan of a typical payload; the fuzz test holds the two to the same
// verdicts, and value, which skip falls back to, stays the authority.
func skipPayloadValue(b []byte, i, depth int, score bool) (end int, ok bool) {
	i = skipPayloadSpace(b, i)
	if i >= len(b) {
		return i, false
	}
	c := b[i]
	if score {
		if c != '-' && (c < '0' || c > '9') {
			return i, false
		}
		end, bad := scanNumber(b, i)
		return end, bad == "" && scoreInRange(b[i:end])
	}
	switch c {
	case '"':
		end, _, bad := scanString(b, i)
		return end, bad == ""
	case '{':
		if depth++; depth > maxPayloadDepth {
			return i, false
		}
		i = skipPayloadSpace(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		seen := 0
		for {
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			end, escaped, bad := scanString(b, i)
			if bad != "" {
				return end, false
			}
			k := classifyPayloadKey(b[i+1:end-1], escaped)
			if k != payloadKeyOther {
				if seen&(1<<k) != 0 {
					return i, false
				}
				seen |= 1 << k
			}
			i = skipPayloadSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = skipPayloadValue(b, i+1, depth, k == payloadKeyScore); !ok {
				return i, false
			}
			if i = skipPayloadSpace(b, i); i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i = skipPayloadSpace(b, i+1)
			case '}':
				return i + 1, true
			default:
				return i, false
			}
		}
	case '[':
		if depth++; depth > maxPayloadDepth {
			return i, false
		}
		i = skipPayloadSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			if i, ok = skipPayloadValue(b, i, depth, false); !ok {
				return i, false
			}
			if i = skipPayloadSpace(b, i); i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i++
			case ']':
				return i + 1, true
			default:
				return i, false
			}
		}
	case 't':
		return i + 4, hasPayloadLiteral(b[i:], "true")
	case 'f':
		return i + 5, hasPayloadLiteral(b[i:], "false")
	case 'n':
		return i + 4, hasPayloadLiteral(b[i:], "null")
	}
	if c != '-' && (c < '0' || c > '9') {
		return i, false
	}
	end, bad := scanNumber(b, i)
	return end, bad == ""
}

// hasPayloadLiteral reports whether b starts with lit.
func hasPayloadLiteral(b []byte, lit string) bool {
	return len(b) >= len(lit) && string(b[:len(lit)]) == lit
}

// skipPayloadSpace returns the index of the first byte at or after i that
// is not white space.
func skipPayloadSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// value checks any value; score says it is a confidence_score.
func (s *payloadScanner) value(score bool) error {
	s.ws()
	if s.pos >= len(s.buf) {
		return s.truncated()
	}
	if score {
		return s.score()
	}
	switch c := s.buf[s.pos]; c {
	case '{':
		if err := s.open(); err != nil {
			return err
		}
		seen := 0
		for first := true; ; {
			more, err := s.more(&first, '}')
			if err != nil || !more {
				return err
			}
			key, err := s.key(&seen)
			if err != nil {
				return err
			}
			if err := s.value(key == payloadKeyScore); err != nil {
				return err
			}
			s.pop()
		}
	case '[':
		if err := s.open(); err != nil {
			return err
		}
		for first, i := true, 0; ; i++ {
			more, err := s.more(&first, ']')
			if err != nil || !more {
				return err
			}
			s.path = append(s.path, payloadPathElem{index: i})
			if err := s.value(false); err != nil {
				return err
			}
			s.pop()
		}
	case '"':
		_, _, err := s.str()
		return err
	default:
		_, err := s.scalar()
		return err
	}
}

// score checks a confidence_score value.
func (s *payloadScanner) score() error {
	c := s.buf[s.pos]
	if c != '-' && (c < '0' || c > '9') {
		return s.typeError("%s is not a number")
	}
	num, err := s.number()
	if err != nil {
		return err
	}
	if !scoreInRange(num) {
		return s.errorf("%s is outside [0, 1]", num)
	}
	return nil
}

// scoreInRange reports whether a JSON number is in [0, 1]. The usual
// forms (0.97, 1, 1.0, 0) are decided without parsing.
func scoreInRange(num []byte) bool {
	simple := true
	for _, c := range num {
		if c == '-' || c == 'e' || c == 'E' {
			simple = false
			break
		}
	}
	if simple {
		switch {
		case num[0] == '0' && (len(num) == 1 || num[1] == '.'):
			return true
		case num[0] == '1' && (len(num) == 1 || num[1] == '.'):
			for _, c := range num[min(2, len(num)):] {
				if c != '0' {
					return false
				}
			}
			return true
		}
		return false
	}
	f, err := strconv.ParseFloat(string(num), 64)
	return err == nil && f >= 0 && f <= 1
}

// scalar checks a number or a literal and returns its kind.
func (s *payloadScanner) scalar() (string, error) {
	c := s.buf[s.pos]
	switch {
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return "a number", err
	case c == 't':
		return "a boolean", s.literal("true")
	case c == 'f':
		return "a boolean", s.literal("false")
	case c == 'n':
		return "null", s.literal("null")
	}
	return "", s.syntaxError(fmt.Sprintf("invalid character %s looking for the beginning of a value", quotePayloadByte(c)))
}

func (s *payloadScanner) literal(lit string) error {
	rest := s.buf[s.pos:]
	if len(rest) < len(lit) {
		if string(rest) == lit[:len(rest)] {
			s.pos = len(s.buf)
			return s.truncated()
		}
	} else if string(rest[:len(lit)]) == lit {
		s.pos += len(lit)
		return nil
	}
	for i := 0; i < len(lit) && i < len(rest); i++ {
		if rest[i] != lit[i] {
			s.pos += i
			break
		}
	}
	return s.syntaxError(fmt.Sprintf("invalid character %s in literal %s", quotePayloadByte(s.buf[s.pos]), lit))
}

// number reads a number (RFC 8259 §6) and returns its text.
func (s *payloadScanner) number() ([]byte, error) {
	start := s.pos
	end, bad := scanNumber(s.buf, start)
	s.pos = end
	if bad != "" {
		if end >= len(s.buf) {
			return nil, s.truncated()
		}
		return nil, s.syntaxError(fmt.Sprintf("invalid character %s %s", quotePayloadByte(s.buf[end]), bad))
	}
	return s.buf[start:end], nil
}

// scanNumber reads the number (RFC 8259 §6) that starts at b[i] and
// returns its end. For a malformed one, it returns the index of the
// offending byte (len(b) if the number is cut short) and where in the
// number it is.
func scanNumber(b []byte, i int) (end int, bad string) {
	digits := func() bool {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return i, "in numeric literal"
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return i, "after decimal point in numeric literal"
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return i, "in exponent of numeric literal"
		}
	}
	return i, ""
}

// documentID reads a document_id's value, which must be a non-empty
// string, and returns its raw content and whether it holds escapes.
func (s *payloadScanner) documentID() ([]byte, bool, error) {
	s.ws()
	if s.pos >= len(s.buf) {
		return nil, false, s.truncated()
	}
	if s.buf[s.pos] != '"' {
		return nil, false, s.typeError("must be a non-empty string, not %s")
	}
	raw, escaped, err := s.str()
	if err != nil {
		return nil, false, err
	}
	if len(raw) == 0 {
		return nil, false, s.errorf("must be a non-empty string")
	}
	return raw, escaped, nil
}

// str reads a string whose opening quote is at pos and returns its raw
// content and whether it holds escapes.
func (s *payloadScanner) str() ([]byte, bool, error) {
	start := s.pos + 1
	end, escaped, bad := scanString(s.buf, s.pos)
	s.pos = end
	if bad != "" {
		if end >= len(s.buf) {
			return nil, false, s.truncated()
		}
		return nil, false, s.syntaxError(fmt.Sprintf("invalid character %s %s", quotePayloadByte(s.buf[end]), bad))
	}
	return s.buf[start : end-1], escaped, nil
}

// scanString reads the string whose opening quote is at b[i] and returns
// the index after its closing quote, and whether it holds escapes. For a
// malformed one, it returns the index of the offending byte (len(b) if the
// string is cut short) and where in the string it is.
func scanString(b []byte, i int) (end int, escaped bool, bad string) {
	for i++; ; {
		i = plainStringRun(b, i)
		if i >= len(b) {
			return len(b), false, "in string literal"
		}
		switch b[i] {
		case '"':
			return i + 1, escaped, ""
		case '\\':
			escaped = true
			i++
			if i >= len(b) {
				return i, false, "in string escape code"
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				i++
				for n := 0; n < 4; n, i = n+1, i+1 {
					if i >= len(b) || !isPayloadHex(b[i]) {
						return i, false, "in \\u hexadecimal character escape"
					}
				}
			default:
				return i, false, "in string escape code"
			}
		default:
			return i, false, "in string literal"
		}
	}
}

// plainStringRun returns the index of the first byte of b at or after i
// that ends a plain run of a JSON string, a quote, a backslash or a
// control character (below 0x20), or len(b). It looks at eight bytes at a
// time.
func plainStringRun(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		if m := stringSpecials(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for i < len(b) && b[i] != '"' && b[i] != '\\' && b[i] >= 0x20 {
		i++
	}
	return i
}

// stringSpecials returns, for eight bytes of a string loaded little-endian
// into w, a mask whose lowest set bit is the high bit of the first quote,
// backslash or control character among them, or 0 if there is none.
// Bytes of UTF-8 sequences (0x80 and up) are plain. These are the tests
// for a zero byte and for a byte below n from "Bit Twiddling Hacks": a
// borrow can set bits above a byte that matches, never below, so the
// lowest set bit is exact.
func stringSpecials(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	bs := w ^ (ones * '\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (w-ones*0x20)&^w) & highs
}

func isPayloadHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// ws skips white space.
func (s *payloadScanner) ws() {
	if s.pos < len(s.buf) && s.buf[s.pos] > ' ' {
		return
	}
	for s.pos < len(s.buf) {
		switch s.buf[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *payloadScanner) pop() { s.path = s.path[:len(s.path)-1] }

// typeError reports the value at pos as of the wrong type, format taking
// its description. A scalar is read first, so that a syntax error in it
// is reported as such.
func (s *payloadScanner) typeError(format string) error {
	var what string
	switch c := s.buf[s.pos]; c {
	case '{':
		what = "an object"
	case '[':
		what = "an array"
	case '"':
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		what = "a string"
		if strings.HasPrefix(format, "%s is not") {
			v := string(raw)
			if escaped {
				v = unescapePayloadKey(raw)
			}
			what = strconv.Quote(truncate(v, 40))
		}
	default:
		start := s.pos
		kind, err := s.scalar()
		if err != nil {
			return err
		}
		what = kind
		if strings.HasPrefix(format, "%s is not") {
			what = string(s.buf[start:s.pos])
		}
	}
	return s.errorf(format, what)
}

func (s *payloadScanner) errorf(format string, args ...any) error {
	return &Error{path: s.pathString(), msg: fmt.Sprintf(format, args...)}
}

// missing reports a required key of the current object as missing.
func (s *payloadScanner) missing(key, detail string) error {
	msg := "missing"
	if detail != "" {
		msg += "; " + detail
	}
	var b strings.Builder
	s.writePath(&b)
	writePathKey(&b, key)
	return &Error{path: b.String(), msg: msg}
}

func (s *payloadScanner) syntaxError(msg string) error {
	return s.errorf("invalid JSON at byte %d: %s", s.pos+1, msg)
}

func (s *payloadScanner) truncated() error {
	return s.errorf("truncated JSON: the body ends at byte %d", len(s.buf))
}

// pathString renders the current path, e.g. data[3].file_data["odd key"],
// or "body" at the top.
func (s *payloadScanner) pathString() string {
	var b strings.Builder
	s.writePath(&b)
	if b.Len() == 0 {
		return "body"
	}
	return b.String()
}

// writePath writes the current path to b.
func (s *payloadScanner) writePath(b *strings.Builder) {
	for _, e := range s.path {
		if e.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
			continue
		}
		raw := s.buf[e.start:e.end]
		k := string(raw)
		if e.escaped {
			k = unescapePayloadKey(raw)
		}
		writePathKey(b, k)
	}
}

// writePathKey writes an object key as the next step of a path.
func writePathKey(b *strings.Builder, k string) {
	if isPlainPayloadKey(k) {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(k)
		return
	}
	b.WriteByte('[')
	b.WriteString(strconv.Quote(k))
	b.WriteByte(']')
}

// isPlainPayloadKey reports whether a key can be written after a dot in a path.
func isPlainPayloadKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// quotePayloadByte shows a byte of the body in an error message.
func quotePayloadByte(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c >= 0x20 && c < 0x7f {
		return "'" + string(c) + "'"
	}
	return fmt.Sprintf("0x%02x", c)
}

// truncate shortens an untrusted string for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
