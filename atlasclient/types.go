package atlasclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
)

// The JSON types below decode Atlas payloads leniently and losslessly:
// every member a type does not understand (an unknown key, or a known key
// whose value has an unexpected shape) is kept verbatim and written back by
// MarshalJSON, so that unmarshalling and marshalling again yields the same
// JSON value (member order aside). Values are kept as json.RawMessage where
// their shape is not fixed, so numbers never lose precision.

// ExtractsPage is one page of GET /v1/docstream/extracts. Callbacks carry
// the same payload.
type ExtractsPage struct {
	// Data holds the documents of the page.
	Data []Document `json:"data"`
	// Page is the page number, from 1.
	Page int `json:"page"`
	// PerPage is the page size Atlas applied.
	PerPage int `json:"per_page"`
	// TotalPages is the number of pages of the batch.
	TotalPages int `json:"total_pages"`
	// TotalItems is the number of documents of the batch.
	TotalItems int `json:"total_items"`
	// HasNext reports whether a later page exists.
	HasNext bool `json:"has_next"`
	// HasPrev reports whether an earlier page exists.
	HasPrev bool `json:"has_prev"`

	// Extra holds the top-level members not decoded above, verbatim.
	Extra map[string]json.RawMessage `json:"-"`

	seen keySet
}

// Keys of ExtractsPage, as bits of a keySet.
const (
	keyData keySet = 1 << iota
	keyPage
	keyPerPage
	keyTotalPages
	keyTotalItems
	keyHasNext
	keyHasPrev
)

// UnmarshalJSON decodes a page. It fails only when the input is not an
// object or data is not an array of objects.
func (p *ExtractsPage) UnmarshalJSON(b []byte) error {
	m, err := decodeObject(b)
	if err != nil {
		return fmt.Errorf("atlas: extracts page: %w", err)
	}
	*p = ExtractsPage{}
	if raw, ok := m["data"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &p.Data); err != nil {
			return fmt.Errorf("atlas: extracts page: data: %w", err)
		}
		delete(m, "data")
		p.seen |= keyData
	}
	p.seen |= takeKey(m, "page", &p.Page, keyPage) |
		takeKey(m, "per_page", &p.PerPage, keyPerPage) |
		takeKey(m, "total_pages", &p.TotalPages, keyTotalPages) |
		takeKey(m, "total_items", &p.TotalItems, keyTotalItems) |
		takeKey(m, "has_next", &p.HasNext, keyHasNext) |
		takeKey(m, "has_prev", &p.HasPrev, keyHasPrev)
	p.Extra = nilIfEmpty(m)
	return nil
}

// MarshalJSON encodes the page. A known member is written when it was
// present in the decoded input or when its value is not the zero value.
func (p ExtractsPage) MarshalJSON() ([]byte, error) {
	m := maps.Clone(p.Extra)
	if m == nil {
		m = make(map[string]json.RawMessage, 7)
	}
	var err error
	put := func(key string, bit keySet, nonZero bool, v any) {
		if err != nil || (!nonZero && p.seen&bit == 0) {
			return
		}
		m[key], err = encode(v)
	}
	put("data", keyData, p.Data != nil, p.Data)
	put("page", keyPage, p.Page != 0, p.Page)
	put("per_page", keyPerPage, p.PerPage != 0, p.PerPage)
	put("total_pages", keyTotalPages, p.TotalPages != 0, p.TotalPages)
	put("total_items", keyTotalItems, p.TotalItems != 0, p.TotalItems)
	put("has_next", keyHasNext, p.HasNext, p.HasNext)
	put("has_prev", keyHasPrev, p.HasPrev, p.HasPrev)
	if err != nil {
		return nil, err
	}
	return encode(m)
}

// Document is one processed document of a batch.
type Document struct {
	// DocumentID is the caller's identifier given at upload.
	DocumentID string `json:"document_id"`
	// FileData is the extraction result.
	FileData FileData `json:"file_data"`

	// Extra holds the members not decoded above, verbatim.
	Extra map[string]json.RawMessage `json:"-"`

	seen keySet
}

// Keys of Document, as bits of a keySet.
const (
	keyDocumentID keySet = 1 << iota
	keyFileData
)

// UnmarshalJSON decodes a document. It fails only when the input is not an
// object.
func (d *Document) UnmarshalJSON(b []byte) error {
	m, err := decodeObject(b)
	if err != nil {
		return fmt.Errorf("atlas: document: %w", err)
	}
	*d = Document{}
	d.seen |= takeKey(m, "document_id", &d.DocumentID, keyDocumentID)
	if raw, ok := m["file_data"]; ok && isObject(raw) {
		if err := json.Unmarshal(raw, &d.FileData); err != nil {
			return fmt.Errorf("atlas: document: file_data: %w", err)
		}
		delete(m, "file_data")
		d.seen |= keyFileData
	}
	d.Extra = nilIfEmpty(m)
	return nil
}

// MarshalJSON encodes the document. A known member is written when it was
// present in the decoded input or when its value is not the zero value.
func (d Document) MarshalJSON() ([]byte, error) {
	m := maps.Clone(d.Extra)
	if m == nil {
		m = make(map[string]json.RawMessage, 2)
	}
	if d.DocumentID != "" || d.seen&keyDocumentID != 0 {
		m["document_id"], _ = encode(d.DocumentID)
	}
	if !d.FileData.isZero() || d.seen&keyFileData != 0 {
		raw, err := d.FileData.MarshalJSON()
		if err != nil {
			return nil, err
		}
		m["file_data"] = raw
	}
	return encode(m)
}

// FileData is the extraction result of one document: its classified type,
// an optional error code, and the extracted fields.
type FileData struct {
	// DocumentType is the classified type (AADHAAR, PAN, ...).
	DocumentType DocumentType
	// ErrorCode is set for documents Atlas could not process, such as
	// UNRECOGNISED or INVALID_DOC.
	ErrorCode string
	// Fields holds every other member of file_data by key, including
	// document_type or error_code when their value has an unexpected
	// shape (then DocumentType or ErrorCode is left zero).
	Fields map[string]Field
}

// UnmarshalJSON decodes file_data. It fails only when the input is not a
// JSON object or null.
func (f *FileData) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("atlas: file_data: %w", err)
	}
	*f = FileData{}
	for k, raw := range m {
		switch k {
		case "document_type":
			var dt DocumentType
			if dt.UnmarshalJSON(raw) == nil && !dt.isZero() {
				f.DocumentType = dt
				continue
			}
		case "error_code":
			var s string
			if !isNull(raw) && json.Unmarshal(raw, &s) == nil && s != "" {
				f.ErrorCode = s
				continue
			}
		}
		var field Field
		if err := field.UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("atlas: file_data: %s: %w", k, err)
		}
		if f.Fields == nil {
			f.Fields = make(map[string]Field, len(m))
		}
		f.Fields[k] = field
	}
	return nil
}

// MarshalJSON encodes file_data. DocumentType and ErrorCode, when set,
// take precedence over members of the same name in Fields.
func (f FileData) MarshalJSON() ([]byte, error) {
	m := make(map[string]json.RawMessage, len(f.Fields)+2)
	for k, field := range f.Fields {
		raw, err := field.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("atlas: file_data: %s: %w", k, err)
		}
		m[k] = raw
	}
	if !f.DocumentType.isZero() {
		raw, err := f.DocumentType.MarshalJSON()
		if err != nil {
			return nil, err
		}
		m["document_type"] = raw
	}
	if f.ErrorCode != "" {
		m["error_code"], _ = encode(f.ErrorCode)
	}
	return encode(m)
}

func (f FileData) isZero() bool {
	return f.DocumentType.isZero() && f.ErrorCode == "" && len(f.Fields) == 0
}

// DocumentType is the classified type of a document. Atlas sends it either
// as a string ("PAN") or as an object ({"value":"PAN","confidence_score":0.9});
// it marshals back in the shape it came in. A DocumentType built in code is
// marshalled as an object when it has a ConfidenceScore or Extra members,
// and as a string otherwise.
type DocumentType struct {
	// Value is the type, such as AADHAAR or PAN.
	Value string
	// ConfidenceScore is the classification confidence in [0, 1], when the
	// object form carried a numeric one.
	ConfidenceScore *float64
	// Extra holds the other members of the object form, verbatim.
	Extra map[string]json.RawMessage

	isObject bool
	scoreRaw json.RawMessage
}

// IsObject reports whether d was decoded from, or marshals to, the object
// form.
func (d DocumentType) IsObject() bool {
	return d.isObject || d.ConfidenceScore != nil || len(d.Extra) > 0
}

func (d DocumentType) isZero() bool {
	return d.Value == "" && !d.IsObject()
}

// UnmarshalJSON accepts a string or an object whose value is a string.
func (d *DocumentType) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*d = DocumentType{Value: s}
		return nil
	}
	m, err := decodeObject(b)
	if err != nil {
		return errors.New("atlas: document_type must be a string or an object")
	}
	var v DocumentType
	if !take(m, "value", &v.Value) {
		return errors.New("atlas: document_type object has no string value")
	}
	v.ConfidenceScore, v.scoreRaw = takeScore(m)
	v.Extra = nilIfEmpty(m)
	v.isObject = true
	*d = v
	return nil
}

// MarshalJSON writes d as a string or as an object; see DocumentType.
func (d DocumentType) MarshalJSON() ([]byte, error) {
	if !d.IsObject() {
		return encode(d.Value)
	}
	m := maps.Clone(d.Extra)
	if m == nil {
		m = make(map[string]json.RawMessage, 2)
	}
	m["value"], _ = encode(d.Value)
	if d.ConfidenceScore != nil {
		raw, err := encodeScore(*d.ConfidenceScore, d.scoreRaw)
		if err != nil {
			return nil, err
		}
		m["confidence_score"] = raw
	}
	return encode(m)
}

// Field is one extracted value of file_data, normally
// {"value": ..., "confidence_score": 0.95}, with more members on some fields
// (aadhaar_number has redact_url). Value is kept raw: it may be a string, a
// number, or an object (formatted_address has state, postcode,
// address_line_1, address_line_2 and city). A member of file_data that is
// not an object (a bare value) is kept in Value and marshals back bare.
type Field struct {
	// Value is the raw JSON of the value member; nil when absent.
	Value json.RawMessage
	// ConfidenceScore is the confidence in [0, 1], when the field carried a
	// numeric one. A non-numeric confidence_score stays in Extra.
	ConfidenceScore *float64
	// Extra holds the other members, such as redact_url, verbatim.
	Extra map[string]json.RawMessage

	bare     bool
	scoreRaw json.RawMessage
}

// Text returns the value when it is a JSON string.
func (f Field) Text() (string, bool) {
	var s string
	if isNull(f.Value) || json.Unmarshal(f.Value, &s) != nil {
		return "", false
	}
	return s, true
}

// Decode unmarshals the value into v, for example a map or a struct for
// formatted_address.
func (f Field) Decode(v any) error {
	if f.Value == nil {
		return errors.New("atlas: field has no value")
	}
	return json.Unmarshal(f.Value, v)
}

// UnmarshalJSON decodes a field from any JSON value.
func (f *Field) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		return errors.New("atlas: field is not valid JSON")
	}
	if !isObject(b) {
		*f = Field{Value: bytes.Clone(b), bare: true}
		return nil
	}
	m, err := decodeObject(b)
	if err != nil {
		return err
	}
	var v Field
	if raw, ok := m["value"]; ok {
		v.Value = raw
		delete(m, "value")
	}
	v.ConfidenceScore, v.scoreRaw = takeScore(m)
	v.Extra = nilIfEmpty(m)
	*f = v
	return nil
}

// MarshalJSON writes the field back in the shape it came in.
func (f Field) MarshalJSON() ([]byte, error) {
	if f.bare {
		if f.Value == nil {
			return []byte("null"), nil
		}
		return f.Value, nil
	}
	m := maps.Clone(f.Extra)
	if m == nil {
		m = make(map[string]json.RawMessage, 2)
	}
	if f.Value != nil {
		m["value"] = f.Value
	}
	if f.ConfidenceScore != nil {
		raw, err := encodeScore(*f.ConfidenceScore, f.scoreRaw)
		if err != nil {
			return nil, err
		}
		m["confidence_score"] = raw
	}
	return encode(m)
}

// FileURL is one file of an upload: a pre-signed URL Atlas fetches, and the
// caller's identifier for it.
type FileURL struct {
	// FileURL is where Atlas downloads the file, normally pre-signed.
	FileURL string `json:"file_url"`
	// DocumentID is the caller's identifier, echoed in the extracts.
	DocumentID string `json:"document_id"`
}

// UploadResult is the answer to an upload. Atlas documents two shapes,
// {"batch_id": "..."} and an array with one UploadedFile per file; Files is
// empty for the first.
type UploadResult struct {
	// BatchID identifies the batch, for Extracts and Documents.
	BatchID string
	// Files lists the uploaded files when Atlas answered with an array.
	Files []UploadedFile
}

// UploadedFile is one element of the array-shaped upload answer.
type UploadedFile struct {
	// BatchID is the batch the file joined.
	BatchID string `json:"batch_id"`
	// DocumentID is the caller's identifier of the file.
	DocumentID string `json:"document_id"`
	// FileUUID is Atlas's identifier of the file.
	FileUUID string `json:"file_uuid"`
}

// keySet records which known members were present in decoded input.
type keySet uint16

// take decodes m[key] into dst and deletes it from m, reporting success. A
// member that is null or does not decode into dst stays in m untouched and
// dst is unchanged.
func take[T any](m map[string]json.RawMessage, key string, dst *T) bool {
	raw, ok := m[key]
	if !ok || isNull(raw) {
		return false
	}
	var v T
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	*dst = v
	delete(m, key)
	return true
}

// takeKey is take returning bit on success and 0 otherwise.
func takeKey[T any](m map[string]json.RawMessage, key string, dst *T, bit keySet) keySet {
	if take(m, key, dst) {
		return bit
	}
	return 0
}

// takeScore takes a numeric confidence_score out of m, returning it with
// its original text.
func takeScore(m map[string]json.RawMessage) (*float64, json.RawMessage) {
	raw := m["confidence_score"]
	var f float64
	if !take(m, "confidence_score", &f) {
		return nil, nil
	}
	return &f, raw
}

// encodeScore writes f, reusing its original text when f is unchanged so
// that the number is written back exactly as it came.
func encodeScore(f float64, orig json.RawMessage) (json.RawMessage, error) {
	if orig != nil {
		if g, err := strconv.ParseFloat(string(orig), 64); err == nil && g == f {
			return orig, nil
		}
	}
	return encode(f)
}

// decodeObject decodes b, which must be a JSON object.
func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	if !isObject(b) {
		return nil, errors.New("not a JSON object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func isObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{'
}

func isNull(b []byte) bool {
	return string(bytes.TrimSpace(b)) == "null"
}

func nilIfEmpty(m map[string]json.RawMessage) map[string]json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	return m
}

// encode marshals v without escaping HTML characters, so that URLs such as
// redact_url keep their '&'. Maps are written with sorted keys.
func encode(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
