package payload

// This is the reference validator the fuzz test compares the route's
// scanner with: the same rules, written on encoding/json's Decoder.Token.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// refValidateCallbackPayload checks, in one streaming pass over r, that it
// holds one JSON object whose `data` is an array of documents, each an
// object with a non-empty string `document_id` and an object `file_data`,
// and that every `confidence_score`, wherever it is, is a number in
// [0, 1]. Other keys are allowed. Duplicates of the keys it checks (data,
// document_id, file_data, confidence_score) are refused, so that no JSON
// parser behind it can read another value than the one checked. It
// returns the number of documents.
func refValidateCallbackPayload(body []byte) (int, error) {
	if !utf8.Valid(body) {
		return 0, &Error{path: "body", msg: "not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	v := &refPayloadValidator{dec: dec}
	return v.payload()
}

// refPayloadValidator walks the tokens of a payload, keeping the JSON path
// of the current value for error messages.
type refPayloadValidator struct {
	dec  *json.Decoder
	path []refPathElem
}

// refPathElem is a step of a JSON path: an object key or an array index.
type refPathElem struct {
	key   string
	index int // -1 for a key
}

func (v *refPayloadValidator) pushKey(k string) {
	v.path = append(v.path, refPathElem{key: k, index: -1})
}
func (v *refPayloadValidator) pushIndex(i int) { v.path = append(v.path, refPathElem{index: i}) }
func (v *refPayloadValidator) pop()            { v.path = v.path[:len(v.path)-1] }

// pathString renders the current path: data[3].file_data["odd key"].
func (v *refPayloadValidator) pathString() string {
	var b strings.Builder
	for _, e := range v.path {
		switch {
		case e.index >= 0:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
		case refIsPlainKey(e.key):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(e.key)
		default:
			b.WriteByte('[')
			b.WriteString(strconv.Quote(e.key))
			b.WriteByte(']')
		}
	}
	return b.String()
}

func (v *refPayloadValidator) errorf(format string, args ...any) error {
	p := v.pathString()
	if p == "" {
		p = "body"
	}
	return &Error{path: p, msg: fmt.Sprintf(format, args...)}
}

// token returns the next token, turning decoder errors into payload
// errors at the current path.
func (v *refPayloadValidator) token() (json.Token, error) {
	tok, err := v.dec.Token()
	if err != nil {
		return nil, v.wrapErr(err)
	}
	return tok, nil
}

func (v *refPayloadValidator) payload() (int, error) {
	tok, err := v.dec.Token()
	if errors.Is(err, io.EOF) {
		return 0, &Error{path: "body", msg: "empty; expected a JSON object"}
	}
	if err != nil {
		return 0, v.wrapErr(err)
	}
	if tok != json.Delim('{') {
		return 0, v.errorf("must be a JSON object, not %s", refDescribeToken(tok))
	}
	docs, seen := 0, map[string]bool{}
	for v.dec.More() {
		key, err := v.key()
		if err != nil {
			return 0, err
		}
		v.pushKey(key)
		if err := v.dup(seen, key); err != nil {
			return 0, err
		}
		switch key {
		case "data":
			docs, err = v.data()
		default:
			err = v.value(key)
		}
		if err != nil {
			return 0, err
		}
		v.pop()
	}
	if _, err := v.token(); err != nil { // the closing brace
		return 0, err
	}
	if !seen["data"] {
		v.pushKey("data")
		return 0, v.errorf("missing; expected an array of documents")
	}
	if _, err := v.dec.Token(); !errors.Is(err, io.EOF) {
		return 0, &Error{path: "body", msg: "unexpected data after the JSON object"}
	}
	return docs, nil
}

// wrapErr turns a decoder error into a payload error at the current path.
func (v *refPayloadValidator) wrapErr(err error) error {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return v.errorf("invalid JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return v.errorf("truncated JSON: the body ends at byte %d", v.dec.InputOffset())
	}
	return err
}

// dup refuses a second data, document_id, file_data or confidence_score
// in one object.
func (v *refPayloadValidator) dup(seen map[string]bool, key string) error {
	switch key {
	case "data", "document_id", "file_data", "confidence_score":
		if seen[key] {
			return v.errorf("duplicate key")
		}
		seen[key] = true
	}
	return nil
}

// key reads an object key.
func (v *refPayloadValidator) key() (string, error) {
	tok, err := v.token()
	if err != nil {
		return "", err
	}
	k, ok := tok.(string)
	if !ok {
		return "", v.errorf("invalid JSON: expected an object key")
	}
	return k, nil
}

// data checks the data array and returns its length.
func (v *refPayloadValidator) data() (int, error) {
	tok, err := v.token()
	if err != nil {
		return 0, err
	}
	if tok != json.Delim('[') {
		return 0, v.errorf("must be an array of documents, not %s", refDescribeToken(tok))
	}
	n := 0
	for ; v.dec.More(); n++ {
		v.pushIndex(n)
		if err := v.document(); err != nil {
			return 0, err
		}
		v.pop()
	}
	if _, err := v.token(); err != nil { // ]
		return 0, err
	}
	return n, nil
}

// document checks one element of data.
func (v *refPayloadValidator) document() error {
	tok, err := v.token()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return v.errorf("must be a document object, not %s", refDescribeToken(tok))
	}
	seen := map[string]bool{}
	for v.dec.More() {
		key, err := v.key()
		if err != nil {
			return err
		}
		v.pushKey(key)
		if err := v.dup(seen, key); err != nil {
			return err
		}
		switch key {
		case "document_id":
			tok, err := v.token()
			if err != nil {
				return err
			}
			if s, ok := tok.(string); !ok {
				return v.errorf("must be a non-empty string, not %s", refDescribeToken(tok))
			} else if s == "" {
				return v.errorf("must be a non-empty string")
			}
		case "file_data":
			tok, err := v.token()
			if err != nil {
				return err
			}
			if tok != json.Delim('{') {
				return v.errorf("must be an object, not %s", refDescribeToken(tok))
			}
			if err := v.object(); err != nil {
				return err
			}
		default:
			if err := v.value(key); err != nil {
				return err
			}
		}
		v.pop()
	}
	if _, err := v.token(); err != nil { // }
		return err
	}
	switch {
	case !seen["document_id"]:
		v.pushKey("document_id")
		return v.errorf("missing")
	case !seen["file_data"]:
		v.pushKey("file_data")
		return v.errorf("missing")
	}
	return nil
}

// value checks any value, the one of key when it is a confidence_score.
func (v *refPayloadValidator) value(key string) error {
	tok, err := v.token()
	if err != nil {
		return err
	}
	if key == "confidence_score" {
		return v.score(tok)
	}
	return v.rest(tok)
}

// rest checks the value that starts with tok.
func (v *refPayloadValidator) rest(tok json.Token) error {
	switch tok {
	case json.Delim('{'):
		return v.object()
	case json.Delim('['):
		for i := 0; v.dec.More(); i++ {
			v.pushIndex(i)
			if err := v.value(""); err != nil {
				return err
			}
			v.pop()
		}
		_, err := v.token() // ]
		return err
	}
	return nil
}

// object checks the members of an object whose { was read.
func (v *refPayloadValidator) object() error {
	seen := map[string]bool{}
	for v.dec.More() {
		key, err := v.key()
		if err != nil {
			return err
		}
		v.pushKey(key)
		if err := v.dup(seen, key); err != nil {
			return err
		}
		if err := v.value(key); err != nil {
			return err
		}
		v.pop()
	}
	_, err := v.token() // }
	return err
}

// score checks a confidence_score value.
func (v *refPayloadValidator) score(tok json.Token) error {
	num, ok := tok.(json.Number)
	if !ok {
		return v.errorf("%s is not a number", refDescribeValue(tok))
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return v.errorf("%s is not a number", num)
	}
	if !(f >= 0 && f <= 1) || err != nil {
		return v.errorf("%s is outside [0, 1]", num)
	}
	return nil
}

// refDescribeToken names the kind of value a token starts.
func refDescribeToken(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return "the end of a container"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", tok)
}

// refDescribeValue shows a scalar token as it was written (strings quoted
// and shortened), or names the kind of a container.
func refDescribeValue(tok json.Token) string {
	switch t := tok.(type) {
	case string:
		return strconv.Quote(truncate(t, 40))
	case bool:
		return strconv.FormatBool(t)
	case nil:
		return "null"
	}
	return refDescribeToken(tok)
}

// refIsPlainKey reports whether a key can be written after a dot in a path.
func refIsPlainKey(k string) bool {
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
