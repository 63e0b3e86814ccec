// Package mask rewrites the identity values of Atlas extraction payloads
// (an extracts page, a callback body, or one document of either) so that
// an app sees only what it must: the last four characters of an Aadhaar
// number, or nothing of a name.
//
// A [Masker] is given field names, each with a [Style]. In every document
// of the payload's `data` array, whatever its document type, it rewrites
// the `value` of each named member of `file_data`:
//
//	{"data": [{"document_id": "a-1", "file_data": {
//	    "aadhaar_number": {"value": "2345 6789 0123", "confidence_score": 0.97, "redact_url": "..."}}}]}
//
// becomes, with aadhaar_number masked last4,
//
//	{"data": [{"document_id": "a-1", "file_data": {
//	    "aadhaar_number": {"value": "XXXXXXXX0123", "confidence_score": 0.97, "redact_url": "..."}}}]}
//
// Every other byte of the input is copied as it is: `confidence_score`,
// `redact_url`, unknown keys, whitespace, other fields and other
// documents. Only the masked values differ, and the output is valid JSON
// whenever the input is.
//
// What is a value:
//   - A string or number `value` is replaced by the masked JSON string (a
//     number becomes a string: its digits are what is masked).
//   - An object or array `value` (formatted_address is one) keeps its
//     shape and keys; each string and number inside it is masked.
//   - null, true and false carry no identity and are left alone.
//   - A named field given flat, as a string or number instead of a
//     {value, confidence_score} object, is masked as if it were its value.
//
// Keys are compared after JSON unescaping ("aadhaar\u005fnumber" is
// aadhaar_number), and a key given twice is masked twice, so that no JSON
// parser behind the masker can read an unmasked value. The input is
// checked to be JSON as strictly as encoding/json's [json.Valid] does; a
// malformed input is an error and nothing of it should be passed on.
//
// The package knows nothing of Caddy or HTTP: the caddy-atlas handler
// masks an extracts page, each document of an `all=1` stream, and each
// callback body with it.
package mask

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Style is how a field's value is masked.
type Style string

const (
	// Last4 keeps the last four characters of the value and replaces
	// every other one with X, after removing separators (whitespace and
	// dashes): "2345 6789 0123" becomes "XXXXXXXX0123", "ABCDE1234F"
	// becomes "XXXXXX234F". A value of fewer than eight characters
	// (separators not counted) is replaced entirely by X, one per
	// character, as four kept characters would give away half of it or
	// more. The number of X shows the length of the value, as the masked
	// form of an Aadhaar number printed by UIDAI does.
	Last4 Style = "last4"
	// Redact replaces the value with the string "REDACTED", whatever its
	// length.
	Redact Style = "redact"
)

// DefaultStyle is the style of a field named without one.
const DefaultStyle = Last4

// Redacted is what [Redact] leaves of a value.
const Redacted = "REDACTED"

// last4Min is the shortest value (separators not counted) of which
// [Last4] keeps four characters.
const last4Min = 8

// ParseStyle returns the style named s ("last4" or "redact"); the empty
// string is [DefaultStyle].
func ParseStyle(s string) (Style, error) {
	switch Style(s) {
	case "":
		return DefaultStyle, nil
	case Last4, Redact:
		return Style(s), nil
	}
	return "", fmt.Errorf("unknown mask style %q (want last4 or redact)", s)
}

// Apply returns the masked form of the decoded value v.
func (s Style) Apply(v string) string {
	if s == Redact {
		return Redacted
	}
	var kept []rune
	for _, r := range v {
		if !isSeparator(r) {
			kept = append(kept, r)
		}
	}
	n := len(kept)
	keep := 0
	if n >= last4Min {
		keep = 4
	}
	var b strings.Builder
	b.Grow(n)
	for range n - keep {
		b.WriteByte('X')
	}
	for _, r := range kept[n-keep:] {
		b.WriteRune(r)
	}
	return b.String()
}

// isSeparator reports whether r is removed before [Last4] counts
// characters: whitespace, the ASCII hyphen-minus and the Unicode dashes.
func isSeparator(r rune) bool {
	return unicode.IsSpace(r) || r == '-' || (r >= '\u2010' && r <= '\u2015') || r == '\u2212'
}

// Masker masks the named fields of Atlas payloads. A Masker is safe for
// concurrent use. A nil *Masker masks nothing and copies its input.
type Masker struct {
	fields map[string]Style
}

// New returns a Masker for fields, a map from field name (a key of
// file_data, such as aadhaar_number) to its style ("" for
// [DefaultStyle]). It returns nil, and no error, for no fields.
func New(fields map[string]Style) (*Masker, error) {
	if len(fields) == 0 {
		return nil, nil
	}
	m := &Masker{fields: make(map[string]Style, len(fields))}
	for name, style := range fields {
		if name == "" {
			return nil, errors.New("mask: empty field name")
		}
		st, err := ParseStyle(string(style))
		if err != nil {
			return nil, fmt.Errorf("mask: field %q: %w", name, err)
		}
		m.fields[name] = st
	}
	return m, nil
}

// Fields returns the masked field names and their styles (a copy).
func (m *Masker) Fields() map[string]Style {
	if m == nil {
		return nil
	}
	out := make(map[string]Style, len(m.fields))
	for k, v := range m.fields {
		out[k] = v
	}
	return out
}

// Payload appends to dst the masked form of src, a whole payload: a JSON
// object whose `data` is an array of documents (an extracts page or a
// callback body). Anything else that is valid JSON is copied unchanged.
// It returns the extended buffer and the number of values masked; on an
// error (src is not valid JSON) the returned buffer holds dst and part of
// the output, and must not be used.
func (m *Masker) Payload(dst, src []byte) ([]byte, int, error) {
	return m.run(dst, src, ctxPayload)
}

// Document appends to dst the masked form of src, one element of a
// payload's `data` array. It is what the `all=1` extracts stream masks,
// a document at a time. See [Masker.Payload].
func (m *Masker) Document(dst, src []byte) ([]byte, int, error) {
	return m.run(dst, src, ctxDocument)
}

func (m *Masker) run(dst, src []byte, c context) ([]byte, int, error) {
	if m == nil {
		if !json.Valid(src) {
			return append(dst, src...), 0, &SyntaxError{Offset: 0, msg: "not valid JSON"}
		}
		return append(dst, src...), 0, nil
	}
	s := scanner{m: m, src: src, out: dst}
	s.ws()
	if err := s.value(c, ""); err != nil {
		return s.out, s.masked, err
	}
	s.ws()
	if s.pos != len(s.src) {
		return s.out, s.masked, s.errorf("data after the JSON value")
	}
	s.out = append(s.out, s.src[s.last:]...)
	return s.out, s.masked, nil
}

// SyntaxError is an input that is not valid JSON. Its message names the
// byte offset and never quotes the input.
type SyntaxError struct {
	Offset int
	msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("mask: invalid JSON at offset %d: %s", e.Offset, e.msg)
}

// context is where in the payload a value is, which decides what is
// masked in it.
type context int

const (
	ctxOther    context = iota // nothing masked inside
	ctxPayload                 // the top-level object
	ctxData                    // the data array
	ctxDocument                // an element of data
	ctxFileData                // a document's file_data
	ctxField                   // a named member of file_data
	ctxValue                   // a named field's value: masked, leaves of containers too
)

// maxDepth is the deepest nesting accepted, as in encoding/json.
const maxDepth = 10000

// scanner walks the input once, copying it lazily: out receives
// src[last:start] and a replacement whenever a value is masked.
type scanner struct {
	m      *Masker
	src    []byte
	pos    int
	depth  int
	out    []byte
	last   int
	masked int
}

func (s *scanner) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: s.pos, msg: fmt.Sprintf(format, args...)}
}

func (s *scanner) ws() {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value scans one value at s.pos (after whitespace) in context c; style
// is the style in force in ctxField and ctxValue.
func (s *scanner) value(c context, style Style) error {
	if s.pos >= len(s.src) {
		return s.errorf("unexpected end of input")
	}
	switch ch := s.src[s.pos]; {
	case ch == '{':
		return s.object(c, style)
	case ch == '[':
		return s.array(c, style)
	case ch == '"':
		start := s.pos
		end, escaped, err := s.str()
		if err != nil {
			return err
		}
		if c == ctxField || c == ctxValue {
			s.replace(start, end, style, s.src[start+1:end-1], escaped)
		}
		return nil
	case ch == '-' || (ch >= '0' && ch <= '9'):
		start := s.pos
		if err := s.number(); err != nil {
			return err
		}
		if c == ctxField || c == ctxValue {
			s.replace(start, s.pos, style, s.src[start:s.pos], false)
		}
		return nil
	case ch == 't':
		return s.literal("true")
	case ch == 'f':
		return s.literal("false")
	case ch == 'n':
		return s.literal("null")
	default:
		return s.errorf("unexpected character %s", quoteByte(ch))
	}
}

// object scans an object; s.pos is at '{'.
func (s *scanner) object(c context, style Style) error {
	if s.depth++; s.depth > maxDepth {
		return s.errorf("nested too deeply")
	}
	s.pos++
	s.ws()
	if s.pos < len(s.src) && s.src[s.pos] == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if s.pos >= len(s.src) || s.src[s.pos] != '"' {
			return s.errorf("expected a string key")
		}
		kstart := s.pos
		kend, escaped, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.src) || s.src[s.pos] != ':' {
			return s.errorf("expected ':' after an object key")
		}
		s.pos++
		s.ws()
		inner, innerStyle := s.member(c, style, s.src[kstart+1:kend-1], escaped)
		if err := s.value(inner, innerStyle); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.src) {
			return s.errorf("unexpected end of input in an object")
		}
		switch s.src[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.errorf("expected ',' or '}' in an object")
		}
	}
}

// member returns the context and style of the value of key raw (its text
// between the quotes) in an object in context c.
func (s *scanner) member(c context, style Style, raw []byte, escaped bool) (context, Style) {
	switch c {
	case ctxPayload, ctxDocument, ctxField:
		var want string
		next := ctxOther
		switch c {
		case ctxPayload:
			want, next = "data", ctxData
		case ctxDocument:
			want, next = "file_data", ctxFileData
		case ctxField:
			want, next = "value", ctxValue
		}
		if keyIs(raw, escaped, want) {
			return next, style
		}
		return ctxOther, ""
	case ctxFileData:
		var st Style
		var ok bool
		if escaped {
			st, ok = s.m.fields[unescape(raw)]
		} else {
			st, ok = s.m.fields[string(raw)] // no allocation for a map index
		}
		if ok {
			return ctxField, st
		}
		return ctxOther, ""
	case ctxValue:
		// Inside an object value: every leaf is masked, keys are not.
		return ctxValue, style
	}
	return ctxOther, ""
}

// keyIs reports whether the key raw (between its quotes) is want.
func keyIs(raw []byte, escaped bool, want string) bool {
	if escaped {
		return unescape(raw) == want
	}
	return string(raw) == want
}

// array scans an array; s.pos is at '['.
func (s *scanner) array(c context, style Style) error {
	if s.depth++; s.depth > maxDepth {
		return s.errorf("nested too deeply")
	}
	elem := ctxOther
	switch c {
	case ctxPayload:
		// A top-level array is not a payload: nothing is masked in it.
	case ctxData:
		elem = ctxDocument
	case ctxField, ctxValue:
		// A field given flat as an array, or an array value: every
		// leaf is masked.
		elem = ctxValue
	}
	s.pos++
	s.ws()
	if s.pos < len(s.src) && s.src[s.pos] == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if err := s.value(elem, style); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.src) {
			return s.errorf("unexpected end of input in an array")
		}
		switch s.src[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.errorf("expected ',' or ']' in an array")
		}
	}
}

// str scans a string at s.pos (at its opening quote) and returns the
// offset just past its closing quote and whether it holds escapes. Like
// encoding/json, it refuses control characters and bad escapes and lets
// invalid UTF-8 through.
func (s *scanner) str() (end int, escaped bool, err error) {
	i := s.pos + 1
	for i < len(s.src) {
		c := s.src[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return s.pos, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(s.src) {
				s.pos = i
				return 0, false, s.errorf("unexpected end of input in a string")
			}
			switch s.src[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s.src) {
					s.pos = i
					return 0, false, s.errorf("unexpected end of input in a string")
				}
				for _, h := range s.src[i+2 : i+6] {
					if !isHex(h) {
						s.pos = i
						return 0, false, s.errorf("bad \\u escape in a string")
					}
				}
				i += 6
			default:
				s.pos = i
				return 0, false, s.errorf("bad escape in a string")
			}
		case c < 0x20:
			s.pos = i
			return 0, false, s.errorf("control character %s in a string", quoteByte(c))
		default:
			i++
		}
	}
	s.pos = i
	return 0, false, s.errorf("unexpected end of input in a string")
}

// number scans a number at s.pos, per RFC 8259.
func (s *scanner) number() error {
	b, i := s.src, s.pos
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		s.pos = i
		return s.errorf("bad number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			s.pos = i
			return s.errorf("bad number: no digit after '.'")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			s.pos = i
			return s.errorf("bad number: no digit in the exponent")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	s.pos = i
	return nil
}

func (s *scanner) literal(lit string) error {
	if len(s.src)-s.pos < len(lit) || string(s.src[s.pos:s.pos+len(lit)]) != lit {
		return s.errorf("bad literal, expected %s", lit)
	}
	s.pos += len(lit)
	return nil
}

// replace writes the masked form of the value src[start:end] (raw is its
// text: a string's between its quotes, or a number's literal).
func (s *scanner) replace(start, end int, style Style, raw []byte, escaped bool) {
	if escaped {
		raw = []byte(unescape(raw))
	}
	s.out = append(s.out, s.src[s.last:start]...)
	s.out = appendMasked(s.out, style, raw)
	s.last = end
	s.masked++
}

// appendMasked appends to dst, as a JSON string, what style leaves of
// the text v (UTF-8, invalid bytes read as U+FFFD): the JSON string of
// style.Apply(string(v)), without allocating.
func appendMasked(dst []byte, style Style, v []byte) []byte {
	if style == Redact {
		return append(append(append(dst, '"'), Redacted...), '"')
	}
	n := 0
	for i := 0; i < len(v); {
		r, size := utf8.DecodeRune(v[i:])
		i += size
		if !isSeparator(r) {
			n++
		}
	}
	keep := 0
	if n >= last4Min {
		keep = 4
	}
	dst = append(dst, '"')
	for range n - keep {
		dst = append(dst, 'X')
	}
	if keep > 0 {
		var tail [4 * utf8.UTFMax]byte
		t, k := tail[:0], 0
		for i := 0; i < len(v); {
			r, size := utf8.DecodeRune(v[i:])
			i += size
			if isSeparator(r) {
				continue
			}
			if k >= n-keep {
				t = utf8.AppendRune(t, r)
			}
			k++
		}
		dst = appendJSONText(dst, t)
	}
	return append(dst, '"')
}

// unescape decodes the text of a string that the scanner has checked,
// the way encoding/json does (bad surrogates and invalid UTF-8 become
// U+FFFD).
func unescape(raw []byte) string {
	var v string
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	_ = json.Unmarshal(quoted, &v)
	return v
}

// appendJSONText appends v, valid UTF-8, escaped for the inside of a
// JSON string.
func appendJSONText(dst []byte, v []byte) []byte {
	const hex = "0123456789abcdef"
	for _, c := range v {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// quoteByte names a byte of the input for an error message: printable
// ASCII quoted, anything else as hex, so that no input text is echoed
// beyond one character.
func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("%q", c)
	}
	return fmt.Sprintf("0x%02x", c)
}
