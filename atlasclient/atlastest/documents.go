package atlastest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
	"unicode"
)

// Document types the simulator classifies documents as. They are the
// type names Atlas documents for file_data.document_type.
const (
	TypeAadhaar        = "AADHAAR"
	TypePAN            = "PAN"
	TypeDrivingLicense = "DRIVING_LICENSE"
	TypeVoterID        = "VOTER_ID"
	TypePassport       = "PASSPORT"
	TypeGSTCert        = "GST_CERT"

	// TypeUnknown is the document_type the simulator gives a document it
	// could not classify (one carrying an error_code). Atlas does not
	// document this value.
	TypeUnknown = "UNKNOWN"
)

// Error codes carried by file_data.error_code for unclassifiable documents.
const (
	ErrorCodeUnrecognised = "UNRECOGNISED"
	ErrorCodeInvalidDoc   = "INVALID_DOC"
)

// hashTypes is the set hash-selected from when a document id carries no hint.
var hashTypes = []string{TypeAadhaar, TypePAN, TypeDrivingLicense, TypeVoterID, TypePassport, TypeGSTCert}

// typeHints maps a word of a document id to the type it selects.
var typeHints = map[string]string{
	"aadhaar":  TypeAadhaar,
	"aadhar":   TypeAadhaar,
	"uidai":    TypeAadhaar,
	"pan":      TypePAN,
	"passport": TypePassport,
	"gst":      TypeGSTCert,
	"gstin":    TypeGSTCert,
	"dl":       TypeDrivingLicense,
	"driving":  TypeDrivingLicense,
	"licence":  TypeDrivingLicense,
	"license":  TypeDrivingLicense,
	"voter":    TypeVoterID,
	"epic":     TypeVoterID,
}

// errorHints maps a word of a document id to the error_code it produces.
var errorHints = map[string]string{
	"blurry":       ErrorCodeUnrecognised,
	"unknown":      ErrorCodeUnrecognised,
	"unrecognised": ErrorCodeUnrecognised,
	"unrecognized": ErrorCodeUnrecognised,
	"invalid":      ErrorCodeInvalidDoc,
}

var errorMessages = map[string]string{
	ErrorCodeUnrecognised: "Document could not be recognised",
	ErrorCodeInvalidDoc:   "Document is not a valid identity or business document",
}

// Classify reports how the simulator classifies documentID: the
// document_type it will carry and, for unclassifiable documents, the
// error_code (empty otherwise). The id is split into words at every
// character that is not a letter, case-insensitively; the first word that
// is a hint decides:
//
//	blurry, unknown, unrecognised, unrecognized  -> UNKNOWN + UNRECOGNISED
//	invalid                                      -> UNKNOWN + INVALID_DOC
//	aadhaar, aadhar, uidai                       -> AADHAAR
//	pan                                          -> PAN
//	passport                                     -> PASSPORT
//	gst, gstin                                   -> GST_CERT
//	dl, driving, licence, license                -> DRIVING_LICENSE
//	voter, epic                                  -> VOTER_ID
//
// An error hint anywhere wins over a type hint. Without a hint the type is
// chosen by hashing the id among AADHAAR, PAN, DRIVING_LICENSE, VOTER_ID,
// PASSPORT and GST_CERT. So "loan-42-pan-front" is a PAN, "kyc_dl2" a
// driving licence, "pan-blurry" unrecognised.
func Classify(documentID string) (docType, errorCode string) {
	words := strings.FieldsFunc(strings.ToLower(documentID), func(r rune) bool {
		return !unicode.IsLetter(r)
	})
	for _, w := range words {
		if code, ok := errorHints[w]; ok {
			return TypeUnknown, code
		}
	}
	for _, w := range words {
		if t, ok := typeHints[w]; ok {
			return t, ""
		}
	}
	sum := sha256.Sum256([]byte("type:" + documentID))
	return hashTypes[binary.BigEndian.Uint64(sum[:8])%uint64(len(hashTypes))], ""
}

// generator draws deterministic values from a stream seeded by a document
// id. It derives values from raw Uint64 outputs of ChaCha8 (whose output
// is fixed by its specification), so the extraction for an id is the same
// in every process and Go version.
type generator struct {
	src *rand.ChaCha8
}

func newGenerator(documentID string) *generator {
	return &generator{src: rand.NewChaCha8(sha256.Sum256([]byte("doc:" + documentID)))}
}

// intn returns a value in [0, n). The modulo bias is irrelevant here.
func (g *generator) intn(n int) int {
	return int(g.src.Uint64() % uint64(n))
}

func (g *generator) between(lo, hi int) int { return lo + g.intn(hi-lo+1) }

func (g *generator) pick(s []string) string { return s[g.intn(len(s))] }

func (g *generator) letters(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('A' + g.intn(26))
	}
	return string(b)
}

func (g *generator) digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + g.intn(10))
	}
	return string(b)
}

// score is a confidence score in [0.70, 0.99] with two decimals.
func (g *generator) score() float64 { return float64(g.between(70, 99)) / 100 }

// date returns a date in the given year range; days stop at 28 so every
// month is valid.
func (g *generator) date(fromYear, toYear int) time.Time {
	return time.Date(g.between(fromYear, toYear), time.Month(g.between(1, 12)), g.between(1, 28), 0, 0, 0, 0, time.UTC)
}

// ddmmyyyy formats a date the way Atlas does.
func ddmmyyyy(t time.Time) string { return t.Format("02/01/2006") }

type person struct {
	first, last, fatherFirst string
	male                     bool
}

func (p person) name() string       { return p.first + " " + p.last }
func (p person) fatherName() string { return p.fatherFirst + " " + p.last }

func (g *generator) person() person {
	p := person{male: g.intn(2) == 0, last: g.pick(surnames)}
	father := g.intn(len(maleNames))
	p.fatherFirst = maleNames[father]
	if !p.male {
		p.first = g.pick(femaleNames)
		return p
	}
	// A son is not named after his father here: skip to the next name.
	own := g.intn(len(maleNames))
	if own == father {
		own = (own + 1) % len(maleNames)
	}
	p.first = maleNames[own]
	return p
}

type place struct {
	city, state, gstCode, rto, pin string
}

type address struct {
	line1, line2 string
	place        place
	postcode     string
}

func (a address) oneLine() string {
	return fmt.Sprintf("%s, %s, %s, %s - %s", a.line1, a.line2, a.place.city, a.place.state, a.postcode)
}

// formatted is the formatted_address value object.
func (a address) formatted() map[string]any {
	return map[string]any{
		"address_line_1": a.line1,
		"address_line_2": a.line2,
		"city":           a.place.city,
		"state":          a.place.state,
		"postcode":       a.postcode,
	}
}

func (g *generator) address() address {
	p := places[g.intn(len(places))]
	return address{
		line1:    fmt.Sprintf("%s %d, %s", g.pick(unitKinds), g.between(1, 40)*10+g.between(1, 8), g.pick(buildings)),
		line2:    fmt.Sprintf("%s, %s", g.pick(streets), g.pick(localities)),
		place:    p,
		postcode: p.pin + g.digits(3),
	}
}

// field is the {"value", "confidence_score"} shape of every extracted field.
func (g *generator) field(v any) map[string]any {
	return map[string]any{"value": v, "confidence_score": g.score()}
}

// extraction builds the file_data object for documentID. objectType selects
// the {value, confidence_score} form of document_type over the plain string.
func extraction(documentID string, objectType bool) map[string]any {
	docType, errCode := Classify(documentID)
	g := newGenerator(documentID)
	fd := map[string]any{}
	switch docType {
	case TypePAN:
		p := g.person()
		// The fourth character is P for an individual, the fifth the
		// initial of the surname.
		pan := g.letters(3) + "P" + p.last[:1] + g.digits(4) + g.letters(1)
		fd["name_as_per_pan"] = g.field(strings.ToUpper(p.name()))
		fd["father_name"] = g.field(strings.ToUpper(p.fatherName()))
		fd["dob"] = g.field(ddmmyyyy(g.date(1960, 2003)))
		fd["pan_number"] = g.field(strings.ToUpper(pan))
		fd["document_quality_flag"] = g.field(g.pick(qualityFlags))
	case TypeAadhaar:
		p := g.person()
		a := g.address()
		relation := "S/O"
		if !p.male {
			relation = "D/O"
		}
		num := g.aadhaarNumber()
		aadhaar := g.field(num[0:4] + " " + num[4:8] + " " + num[8:12])
		aadhaar["redact_url"] = "https://docstream.sim.invalid/v1/docstream/redacted/" + shortHash(documentID) + ".jpg"
		fd["name"] = g.field(p.name())
		fd["address"] = g.field(relation + " " + p.fatherName() + ", " + a.oneLine())
		fd["formatted_address"] = g.field(a.formatted())
		fd["aadhaar_number"] = aadhaar
		fd["date_of_birth"] = g.field(ddmmyyyy(g.date(1960, 2003)))
	case TypeDrivingLicense:
		p := g.person()
		pl := places[g.intn(len(places))]
		dob := g.date(1960, 2003)
		issue := time.Date(dob.Year()+18+g.intn(10), time.Month(g.between(1, 12)), g.between(1, 28), 0, 0, 0, 0, time.UTC)
		fd["dl_number"] = g.field(fmt.Sprintf("%s%02d %d%s", pl.rto, g.between(1, 50), issue.Year(), g.digits(7)))
		fd["name"] = g.field(strings.ToUpper(p.name()))
		fd["date_of_birth"] = g.field(ddmmyyyy(dob))
		fd["issue_date"] = g.field(ddmmyyyy(issue))
		fd["valid_till"] = g.field(ddmmyyyy(issue.AddDate(20, 0, -1)))
		fd["state"] = g.field(pl.state)
	case TypeVoterID:
		p := g.person()
		gender := "MALE"
		if !p.male {
			gender = "FEMALE"
		}
		fd["voter_id"] = g.field(g.letters(3) + g.digits(7))
		fd["name"] = g.field(p.name())
		fd["date_of_birth"] = g.field(ddmmyyyy(g.date(1960, 2003)))
		fd["gender"] = g.field(gender)
	case TypePassport:
		p := g.person()
		gender := "M"
		if !p.male {
			gender = "F"
		}
		issue := g.date(2015, 2024)
		fd["passport_number"] = g.field(g.pick(passportSeries) + g.digits(7))
		fd["name"] = g.field(strings.ToUpper(p.name()))
		fd["date_of_birth"] = g.field(ddmmyyyy(g.date(1960, 2003)))
		fd["place_of_birth"] = g.field(strings.ToUpper(places[g.intn(len(places))].city))
		fd["gender"] = g.field(gender)
		fd["date_of_issue"] = g.field(ddmmyyyy(issue))
		fd["date_of_expiry"] = g.field(ddmmyyyy(issue.AddDate(10, 0, -1)))
		fd["place_of_issue"] = g.field(strings.ToUpper(places[g.intn(len(places))].city))
	case TypeGSTCert:
		p := g.person()
		a := g.address()
		// Business PAN: C (company) or F (firm) as the fourth character.
		pan := g.letters(3) + g.pick([]string{"C", "F"}) + p.last[:1] + g.digits(4) + g.letters(1)
		gstin := a.place.gstCode + strings.ToUpper(pan) + fmt.Sprint(g.between(1, 9)) + "Z"
		gstin += string(gstinCheckChar(gstin))
		fd["gst_number"] = g.field(gstin)
		fd["legal_name"] = g.field(strings.ToUpper(p.last + " " + g.pick(businessKinds)))
		fd["address"] = g.field(a.oneLine())
		fd["formatted_address"] = g.field(a.formatted())
		fd["date_of_issue"] = g.field(ddmmyyyy(g.date(2017, 2025)))
	default:
		fd["error_code"] = errCode
		fd["error_message"] = errorMessages[errCode]
	}
	if objectType {
		fd["document_type"] = g.field(docType)
	} else {
		fd["document_type"] = docType
	}
	return fd
}

// fileData is the JSON of extraction. Map keys are sorted by encoding/json,
// so the bytes are deterministic.
func fileData(documentID string, objectType bool) json.RawMessage {
	b, err := json.Marshal(extraction(documentID, objectType))
	if err != nil {
		// Only strings, numbers and maps: marshalling cannot fail.
		return json.RawMessage(`{}`)
	}
	return b
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", sum[:8])
}

// aadhaarNumber returns 12 digits, not starting with 0 or 1, whose last
// digit is the Verhoeff check digit, as real Aadhaar numbers are.
func (g *generator) aadhaarNumber() string {
	body := fmt.Sprint(g.between(2, 9)) + g.digits(10)
	return body + fmt.Sprint(verhoeffCheck(body))
}

var (
	verhoeffD = [10][10]int{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
		{1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
		{2, 3, 4, 0, 1, 7, 8, 9, 5, 6},
		{3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
		{4, 0, 1, 2, 3, 9, 5, 6, 7, 8},
		{5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
		{6, 5, 9, 8, 7, 1, 0, 4, 3, 2},
		{7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
		{8, 7, 6, 5, 9, 3, 2, 1, 0, 4},
		{9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
	}
	verhoeffP = [8][10]int{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
		{1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
		{5, 8, 0, 3, 7, 9, 6, 1, 4, 2},
		{8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
		{9, 4, 5, 3, 1, 2, 6, 8, 7, 0},
		{4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
		{2, 7, 9, 3, 8, 0, 6, 4, 1, 5},
		{7, 0, 4, 6, 9, 1, 3, 2, 5, 8},
	}
	verhoeffInv = [10]int{0, 4, 3, 2, 1, 5, 6, 7, 8, 9}
)

// verhoeffCheck computes the Verhoeff check digit of a string of digits.
func verhoeffCheck(digits string) int {
	c := 0
	for i := 0; i < len(digits); i++ {
		d := int(digits[len(digits)-1-i] - '0')
		c = verhoeffD[c][verhoeffP[(i+1)%8][d]]
	}
	return verhoeffInv[c]
}

// verhoeffValid reports whether digits end in a correct check digit.
func verhoeffValid(digits string) bool {
	c := 0
	for i := 0; i < len(digits); i++ {
		d := int(digits[len(digits)-1-i] - '0')
		c = verhoeffD[c][verhoeffP[i%8][d]]
	}
	return c == 0
}

// gstinCheckChar computes the 15th (check) character of a GSTIN from its
// first 14 characters.
func gstinCheckChar(first14 string) byte {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	sum := 0
	for i := 0; i < len(first14); i++ {
		v := strings.IndexByte(alphabet, first14[i])
		factor := 1
		if i%2 == 1 {
			factor = 2
		}
		p := v * factor
		sum += p/36 + p%36
	}
	return alphabet[(36-sum%36)%36]
}

var (
	maleNames = []string{
		"Aarav", "Rahul", "Vikram", "Arjun", "Rohan", "Sandeep", "Amit", "Suresh", "Rajesh",
		"Karthik", "Pranav", "Imran", "Harpreet", "Anil", "Manoj", "Venkatesh", "Siddharth",
		"Nikhil", "Deepak", "Farhan",
	}
	femaleNames = []string{
		"Priya", "Ananya", "Sneha", "Kavya", "Pooja", "Neha", "Lakshmi", "Divya", "Meera",
		"Aisha", "Shreya", "Anjali", "Sunita", "Ritu", "Fatima", "Gurpreet", "Swati", "Nandini",
	}
	surnames = []string{
		"Sharma", "Patel", "Iyer", "Reddy", "Nair", "Gupta", "Singh", "Kulkarni", "Deshpande",
		"Banerjee", "Mukherjee", "Menon", "Khan", "Joshi", "Agarwal", "Chatterjee", "Rao",
		"Pillai", "Verma", "Mehta", "Bhat", "Das", "Shetty", "Naidu",
	}
	places = []place{
		{city: "Mumbai", state: "Maharashtra", gstCode: "27", rto: "MH", pin: "400"},
		{city: "Pune", state: "Maharashtra", gstCode: "27", rto: "MH", pin: "411"},
		{city: "Bengaluru", state: "Karnataka", gstCode: "29", rto: "KA", pin: "560"},
		{city: "Chennai", state: "Tamil Nadu", gstCode: "33", rto: "TN", pin: "600"},
		{city: "Hyderabad", state: "Telangana", gstCode: "36", rto: "TS", pin: "500"},
		{city: "New Delhi", state: "Delhi", gstCode: "07", rto: "DL", pin: "110"},
		{city: "Kolkata", state: "West Bengal", gstCode: "19", rto: "WB", pin: "700"},
		{city: "Ahmedabad", state: "Gujarat", gstCode: "24", rto: "GJ", pin: "380"},
		{city: "Jaipur", state: "Rajasthan", gstCode: "08", rto: "RJ", pin: "302"},
		{city: "Lucknow", state: "Uttar Pradesh", gstCode: "09", rto: "UP", pin: "226"},
		{city: "Kochi", state: "Kerala", gstCode: "32", rto: "KL", pin: "682"},
		{city: "Bhopal", state: "Madhya Pradesh", gstCode: "23", rto: "MP", pin: "462"},
		{city: "Chandigarh", state: "Chandigarh", gstCode: "04", rto: "CH", pin: "160"},
		{city: "Indore", state: "Madhya Pradesh", gstCode: "23", rto: "MP", pin: "452"},
	}
	unitKinds  = []string{"Flat No.", "House No.", "Plot No.", "Door No.", "Shop No."}
	buildings  = []string{"Sai Krupa Apartments", "Green Park Society", "Shanti Niwas", "Lotus Residency", "Ganga Heights", "Sunrise Towers", "Vrindavan Complex", "Lake View Enclave"}
	streets    = []string{"MG Road", "Station Road", "Nehru Nagar Main Road", "Link Road", "Temple Street", "Gandhi Marg", "Ring Road", "Church Street"}
	localities = []string{"Koregaon Park", "Andheri East", "Indiranagar", "T Nagar", "Banjara Hills", "Salt Lake", "Navrangpura", "Malviya Nagar", "Gomti Nagar", "Kakkanad"}

	qualityFlags   = []string{"original", "original", "original", "xerox_copy", "photo_of_photo"}
	passportSeries = []string{"J", "K", "L", "M", "N", "P", "R", "S", "T", "U", "V", "W"}
	businessKinds  = []string{"TRADERS", "ENTERPRISES", "INDUSTRIES PRIVATE LIMITED", "AND SONS", "TEXTILES LLP", "AGRO PRODUCTS PRIVATE LIMITED"}
)
