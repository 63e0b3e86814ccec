package atlastest

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		id, docType, errCode string
	}{
		{"loan-42-pan-front", TypePAN, ""},
		{"PAN_001", TypePAN, ""},
		{"company-doc-7", "", ""}, // "pan" inside a word is no hint
		{"aadhaar-back", TypeAadhaar, ""},
		{"applicant1_aadhar", TypeAadhaar, ""},
		{"kyc_dl2", TypeDrivingLicense, ""},
		{"driving-licence", TypeDrivingLicense, ""},
		{"handle-9", "", ""}, // nor "dl" inside a word
		{"Voter-ID", TypeVoterID, ""},
		{"passport.jpg", TypePassport, ""},
		{"gst-cert", TypeGSTCert, ""},
		{"pan-blurry", TypeUnknown, ErrorCodeUnrecognised},
		{"unknown", TypeUnknown, ErrorCodeUnrecognised},
		{"scan-INVALID-3", TypeUnknown, ErrorCodeInvalidDoc},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			docType, errCode := Classify(tt.id)
			if tt.docType == "" {
				// hash-selected: any of the six, stable
				if !contains(hashTypes, docType) || errCode != "" {
					t.Fatalf("Classify(%q) = %q, %q; want one of %v", tt.id, docType, errCode, hashTypes)
				}
				if again, _ := Classify(tt.id); again != docType {
					t.Fatalf("Classify(%q) is not stable", tt.id)
				}
				return
			}
			if docType != tt.docType || errCode != tt.errCode {
				t.Fatalf("Classify(%q) = %q, %q; want %q, %q", tt.id, docType, errCode, tt.docType, tt.errCode)
			}
		})
	}

	t.Run("hash selection covers every type", func(t *testing.T) {
		seen := map[string]int{}
		for i := 0; i < 600; i++ {
			d, _ := Classify(fmt.Sprintf("doc-%d", i))
			seen[d]++
		}
		for _, typ := range hashTypes {
			if seen[typ] < 50 {
				t.Errorf("%s chosen %d times of 600", typ, seen[typ])
			}
		}
	})
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

var (
	ddmmyyyyRe = regexp.MustCompile(`^[0-9]{2}/[0-9]{2}/[0-9]{4}$`)
	fieldRes   = map[string]*regexp.Regexp{
		"pan_number":            regexp.MustCompile(`^[A-Z]{5}[0-9]{4}[A-Z]$`),
		"aadhaar_number":        regexp.MustCompile(`^[2-9][0-9]{3} [0-9]{4} [0-9]{4}$`),
		"passport_number":       regexp.MustCompile(`^[A-Z][0-9]{7}$`),
		"voter_id":              regexp.MustCompile(`^[A-Z]{3}[0-9]{7}$`),
		"dl_number":             regexp.MustCompile(`^[A-Z]{2}[0-9]{2} [0-9]{11}$`),
		"gst_number":            regexp.MustCompile(`^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9]Z[0-9A-Z]$`),
		"document_quality_flag": regexp.MustCompile(`^(original|xerox_copy|photo_of_photo)$`),
		"gender":                regexp.MustCompile(`^(M|F|MALE|FEMALE)$`),
	}
	dateFields = map[string]bool{
		"dob": true, "date_of_birth": true, "issue_date": true, "valid_till": true,
		"date_of_issue": true, "date_of_expiry": true,
	}
	wantFields = map[string][]string{
		TypePAN:            {"name_as_per_pan", "father_name", "dob", "pan_number", "document_quality_flag"},
		TypeAadhaar:        {"name", "address", "formatted_address", "aadhaar_number", "date_of_birth"},
		TypeDrivingLicense: {"dl_number", "name", "date_of_birth", "issue_date", "valid_till", "state"},
		TypeVoterID:        {"voter_id", "name", "date_of_birth", "gender"},
		TypePassport:       {"passport_number", "name", "date_of_birth", "place_of_birth", "gender", "date_of_issue", "date_of_expiry", "place_of_issue"},
		TypeGSTCert:        {"gst_number", "legal_name", "address", "formatted_address", "date_of_issue"},
		TypeUnknown:        {"error_code", "error_message"},
	}
)

// TestExtractionFields checks the shape and plausibility of every field of
// many generated documents.
func TestExtractionFields(t *testing.T) {
	for i := 0; i < 1200; i++ {
		id := fmt.Sprintf("applicant-%d", i)
		if i%10 == 0 {
			id += "-blurry"
		}
		for _, objectType := range []bool{false, true} {
			checkFileData(t, id, fileData(id, objectType), objectType)
		}
	}
}

type field struct {
	Value     json.RawMessage `json:"value"`
	Score     *float64        `json:"confidence_score"`
	RedactURL string          `json:"redact_url"`
}

func checkFileData(t *testing.T, id string, raw json.RawMessage, objectType bool) {
	t.Helper()
	var fd map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fd); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	wantType, wantCode := Classify(id)
	var docType string
	if objectType {
		var f field
		if err := json.Unmarshal(fd["document_type"], &f); err != nil || f.Score == nil {
			t.Fatalf("%s: document_type %s is not a field", id, fd["document_type"])
		}
		_ = json.Unmarshal(f.Value, &docType)
	} else if err := json.Unmarshal(fd["document_type"], &docType); err != nil {
		t.Fatalf("%s: document_type %s is not a string", id, fd["document_type"])
	}
	if docType != wantType {
		t.Fatalf("%s: document_type %q, want %q", id, docType, wantType)
	}

	var keys []string
	for k := range fd {
		if k != "document_type" {
			keys = append(keys, k)
		}
	}
	want := append([]string(nil), wantFields[docType]...)
	sort.Strings(keys)
	sort.Strings(want)
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Fatalf("%s (%s): fields (-want +got):\n%s", id, docType, diff)
	}

	if docType == TypeUnknown {
		var code string
		_ = json.Unmarshal(fd["error_code"], &code)
		if code != wantCode {
			t.Fatalf("%s: error_code %q, want %q", id, code, wantCode)
		}
		return
	}

	for name, rawField := range fd {
		if name == "document_type" {
			continue
		}
		var f field
		if err := json.Unmarshal(rawField, &f); err != nil || f.Score == nil || f.Value == nil {
			t.Fatalf("%s: %s = %s is not {value, confidence_score}", id, name, rawField)
		}
		if s := *f.Score; s < 0 || s > 1 || math.Abs(s*100-math.Round(s*100)) > 1e-9 {
			t.Fatalf("%s: %s confidence_score %v not in [0,1] with two decimals", id, name, s)
		}
		if name == "formatted_address" {
			var a map[string]string
			if err := json.Unmarshal(f.Value, &a); err != nil {
				t.Fatalf("%s: formatted_address value %s: %v", id, f.Value, err)
			}
			for _, k := range []string{"state", "postcode", "address_line_1", "address_line_2", "city"} {
				if a[k] == "" {
					t.Fatalf("%s: formatted_address lacks %s: %s", id, k, f.Value)
				}
			}
			if len(a["postcode"]) != 6 {
				t.Fatalf("%s: postcode %q", id, a["postcode"])
			}
			continue
		}
		var v string
		if err := json.Unmarshal(f.Value, &v); err != nil || v == "" {
			t.Fatalf("%s: %s value %s is not a non-empty string", id, name, f.Value)
		}
		if re := fieldRes[name]; re != nil && !re.MatchString(v) {
			t.Fatalf("%s: %s = %q does not match %s", id, name, v, re)
		}
		if dateFields[name] {
			if _, err := time.Parse("02/01/2006", v); err != nil || !ddmmyyyyRe.MatchString(v) {
				t.Fatalf("%s: %s = %q is not DD/MM/YYYY", id, name, v)
			}
		}
		switch name {
		case "aadhaar_number":
			digits := v[0:4] + v[5:9] + v[10:14]
			if !verhoeffValid(digits) {
				t.Fatalf("%s: aadhaar %q fails the Verhoeff check", id, v)
			}
			if f.RedactURL == "" {
				t.Fatalf("%s: aadhaar_number lacks redact_url", id)
			}
		case "gst_number":
			if gstinCheckChar(v[:14]) != v[14] {
				t.Fatalf("%s: GSTIN %q has a wrong check character", id, v)
			}
		}
	}
}

func TestChecksums(t *testing.T) {
	// Published examples.
	if c := gstinCheckChar("27AAPFU0939F1Z"); c != 'V' {
		t.Errorf("GSTIN check of 27AAPFU0939F1Z = %c, want V", c)
	}
	if got := verhoeffCheck("236"); got != 3 {
		t.Errorf("Verhoeff check of 236 = %d, want 3", got)
	}
	if !verhoeffValid("2363") || verhoeffValid("2364") {
		t.Error("verhoeffValid is wrong on 2363/2364")
	}
}

func TestPANStructure(t *testing.T) {
	for i := 0; i < 200; i++ {
		var fd map[string]field
		if err := json.Unmarshal(fileData(fmt.Sprintf("pan-%d", i), true), &fd); err != nil {
			t.Fatal(err)
		}
		var pan, name string
		_ = json.Unmarshal(fd["pan_number"].Value, &pan)
		_ = json.Unmarshal(fd["name_as_per_pan"].Value, &name)
		surname := name[len(name)-len(lastWord(name)):]
		if pan[3] != 'P' || pan[4] != surname[0] {
			t.Fatalf("PAN %q for %q: want 4th char P and 5th the surname initial", pan, name)
		}
	}
}

func lastWord(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ' ' {
			return s[i+1:]
		}
	}
	return s
}
