package payload

import (
	"unicode/utf8"
)

// Document is one element of a callback's data array, as Documents finds
// it.
type Document struct {
	// ID is the element's document_id, unescaped. It is never empty.
	ID string
	// ErrorCode is the element's error_code, or else its
	// file_data.error_code, where Atlas's simulator and package
	// atlasclient put it: "" if neither is a non-empty string (a
	// non-string error_code is not a code, as in atlasclient). Of
	// several error_code members in one object the last counts, as in
	// encoding/json.
	ErrorCode string
	// Extracted says that file_data is an object with at least one
	// member.
	Extracted bool
	// Available says that the document's outcome is in the callback:
	// Extracted, or an ErrorCode. A document without file_data, or with
	// a null or empty one ({}), and without an error code is still
	// pending at Atlas.
	Available bool
	// Start and End delimit the element in the body: body[Start:End] is
	// the element's object, from its '{' to its '}', as Atlas wrote it.
	Start, End int
}

// Documents returns the elements of the data array of a callback body, in
// order, in one pass over body that checks it as Validate does, with one
// difference: an element's file_data may be missing or null (a document
// still pending at Atlas), where Validate wants an object. So Documents
// accepts every body that Validate accepts, and a body it accepts fails
// Validate only for a file_data that is missing or null. As with
// Validate, an element without a non-empty string document_id fails the
// whole body (the error names the element, e.g. `data[3].document_id:
// missing`): an element that cannot be matched to a batch is never
// dropped silently. Duplicate document ids are returned as they come.
//
// It allocates the slice and the ids, nothing in proportion to the rest
// of the body.
func Documents(body []byte) ([]Document, error) {
	if !utf8.Valid(body) {
		return nil, &Error{path: "body", msg: "not valid UTF-8"}
	}
	var path [16]payloadPathElem
	s := payloadScanner{buf: body, path: path[:0], collect: true}
	if _, err := s.payload(); err != nil {
		return nil, err
	}
	return s.docs, nil
}

// element reads one element of data for Documents and appends it to
// s.docs.
func (s *payloadScanner) element() error {
	s.ws()
	if s.pos >= len(s.buf) {
		return s.truncated()
	}
	if s.buf[s.pos] != '{' {
		return s.typeError("must be a document object, not %s")
	}
	d := Document{Start: s.pos}
	if err := s.open(); err != nil {
		return err
	}
	seen := 0
	var fileCode string
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
		switch {
		case key == payloadKeyDocumentID:
			raw, escaped, err := s.documentID()
			if err != nil {
				return err
			}
			if escaped {
				d.ID = unescapePayloadKey(raw)
			} else {
				d.ID = string(raw)
			}
		case key == payloadKeyFileData:
			s.ws()
			if s.pos >= len(s.buf) {
				return s.truncated()
			}
			switch s.buf[s.pos] {
			case '{':
				if fileCode, d.Extracted, err = s.fileData(); err != nil {
					return err
				}
			case 'n':
				if err := s.literal("null"); err != nil {
					return err
				}
			default:
				return s.typeError("must be an object or null, not %s")
			}
		case key == payloadKeyOther && s.atErrorCode():
			if d.ErrorCode, err = s.errorCode(); err != nil {
				return err
			}
		default:
			if err := s.skip(key == payloadKeyScore); err != nil {
				return err
			}
		}
		s.pop()
	}
	if seen&(1<<payloadKeyDocumentID) == 0 {
		return s.missing("document_id", "")
	}
	d.End = s.pos
	if d.ErrorCode == "" {
		d.ErrorCode = fileCode
	}
	d.Available = d.Extracted || d.ErrorCode != ""
	s.docs = append(s.docs, d)
	return nil
}

// fileData reads a file_data object, checking it as skip does, and
// returns its error_code and whether it has members. As skip, it takes a
// fast path, skipFileData, and reads the object again to say what is
// wrong and where if that stops.
func (s *payloadScanner) fileData() (code string, members bool, err error) {
	if end, code, members, ok := skipFileData(s.buf, s.pos, s.depth); ok {
		s.pos = end
		return code, members, nil
	}
	if err := s.open(); err != nil {
		return "", false, err
	}
	seen := 0
	for first := true; ; {
		more, err := s.more(&first, '}')
		if err != nil || !more {
			return code, members, err
		}
		members = true
		key, err := s.key(&seen)
		if err != nil {
			return "", false, err
		}
		if key == payloadKeyOther && s.atErrorCode() {
			code, err = s.errorCode()
		} else {
			err = s.skip(key == payloadKeyScore)
		}
		if err != nil {
			return "", false, err
		}
		s.pop()
	}
}

// atErrorCode reports whether the key just read, the last step of the
// path, is error_code.
func (s *payloadScanner) atErrorCode() bool {
	e := s.path[len(s.path)-1]
	return isErrorCodeKey(s.buf[e.start:e.end], e.escaped)
}

// errorCode reads the value of an error_code: a string is the code,
// anything else (checked as skip does) is no code.
func (s *payloadScanner) errorCode() (string, error) {
	s.ws()
	if s.pos >= len(s.buf) {
		return "", s.truncated()
	}
	if s.buf[s.pos] != '"' {
		return "", s.skip(false)
	}
	raw, escaped, err := s.str()
	if err != nil || !escaped {
		return string(raw), err
	}
	return unescapePayloadKey(raw), nil
}

// skipFileData is fileData without the path and the error messages, on
// skipPayloadValue: for the file_data object at b[i], nested depth deep,
// it returns its end, its error_code and whether it has members, if it
// passes fileData's checks; ok is false at the first thing it does not
// accept. FuzzDocuments holds it to fileData's verdicts through
// Documents' agreement with Validate.
func skipFileData(b []byte, i, depth int) (end int, code string, members, ok bool) {
	if depth++; depth > maxPayloadDepth {
		return i, "", false, false
	}
	i = skipPayloadSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, "", false, true
	}
	seen := 0
	for {
		if i >= len(b) || b[i] != '"' {
			return i, "", false, false
		}
		end, escaped, bad := scanString(b, i)
		if bad != "" {
			return end, "", false, false
		}
		raw := b[i+1 : end-1]
		k := classifyPayloadKey(raw, escaped)
		if k != payloadKeyOther {
			if seen&(1<<k) != 0 {
				return i, "", false, false
			}
			seen |= 1 << k
		}
		i = skipPayloadSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return i, "", false, false
		}
		if isErrorCodeKey(raw, escaped) {
			i = skipPayloadSpace(b, i+1)
			if i < len(b) && b[i] == '"' {
				end, escaped, bad := scanString(b, i)
				if bad != "" {
					return end, "", false, false
				}
				code = string(b[i+1 : end-1])
				if escaped {
					code = unescapePayloadKey(b[i+1 : end-1])
				}
				i = end
			} else {
				code = ""
				if i, ok = skipPayloadValue(b, i, depth, false); !ok {
					return i, "", false, false
				}
			}
		} else if i, ok = skipPayloadValue(b, i+1, depth, k == payloadKeyScore); !ok {
			return i, "", false, false
		}
		if i = skipPayloadSpace(b, i); i >= len(b) {
			return i, "", false, false
		}
		switch b[i] {
		case ',':
			i = skipPayloadSpace(b, i+1)
		case '}':
			return i + 1, code, true, true
		default:
			return i, "", false, false
		}
	}
}

// isErrorCodeKey reports whether a raw key is error_code.
func isErrorCodeKey(raw []byte, escaped bool) bool {
	if escaped {
		return unescapePayloadKey(raw) == "error_code"
	}
	return string(raw) == "error_code"
}
