package whsign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The example of the Standard Webhooks reference libraries' tests.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t testing.TB, s string) Secret {
	t.Helper()
	sec, err := ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

func TestSpecExample(t *testing.T) {
	if got := mustSecret(t, specSecret).Sign(specID, specTimestamp, []byte(specBody)); got != specSignature {
		t.Fatalf("Sign = %s, want %s", got, specSignature)
	}
}

func TestParseSecret(t *testing.T) {
	key32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for _, ok := range []string{
		specSecret,
		"whsec_" + key32,
		"  whsec_" + key32 + "\n",
		"whsec_" + strings.TrimRight(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 25)), "="),
		"whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 64)),
	} {
		if _, err := ParseSecret(ok); err != nil {
			t.Errorf("ParseSecret: %v", err)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{" \n", "empty"},
		{key32, `must start with "whsec_"`},
		{"WHSEC_" + key32, `must start with "whsec_"`},
		{"whsec_" + key32[:10] + "!!" + key32[12:], "not valid base64"},
		{"whsec_", "the key is 0 bytes"},
		{"whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 23)), "the key is 23 bytes, want 24 to 64"},
		{"whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 65)), "the key is 65 bytes"},
	} {
		_, err := ParseSecret(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSecret(%q): %v, want %q", tc.in, err, tc.want)
			continue
		}
		if b := strings.TrimSpace(strings.TrimPrefix(tc.in, "whsec_")); len(b) >= 4 && strings.Contains(err.Error(), b[:4]) {
			t.Errorf("error %q echoes the secret", err)
		}
	}
	_, err := NewSigner("whsec_"+key32, "nope")
	if err == nil || !strings.HasPrefix(err.Error(), "secret 2: ") {
		t.Errorf("NewSigner with a bad second secret: %v", err)
	}
	if _, err := NewSigner(); err == nil {
		t.Error("NewSigner with no secret succeeded")
	}
	sec := mustSecret(t, "whsec_"+key32)
	for _, s := range []string{sec.String(), sec.GoString()} {
		if strings.Contains(s, key32[:8]) {
			t.Errorf("Secret prints its key: %s", s)
		}
	}
	if _, err := ParseSecret(NewSecret()); err != nil {
		t.Errorf("NewSecret gave an unparsable secret: %v", err)
	}
}

func TestSignVerify(t *testing.T) {
	oldSec, newSec, other := NewSecret(), NewSecret(), NewSecret()
	signer, err := NewSigner(newSec, oldSec)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"data":[]}`)
	h := http.Header{}
	h.Set(HeaderSignature, "v1,smuggled")
	signer.SetHeaders(h, "cb-1", now, body)
	if got := h.Values(HeaderSignature); len(got) != 1 || len(strings.Fields(got[0])) != 2 {
		t.Fatalf("signature header %q, want two signatures in one value", got)
	}
	if h.Get(HeaderID) != "cb-1" || h.Get(HeaderTimestamp) != "1800000000" {
		t.Fatalf("headers %v", h)
	}
	for _, sec := range []string{oldSec, newSec} {
		if id, err := Verify(h, body, now.Add(4*time.Minute), DefaultTolerance, mustSecret(t, sec)); err != nil || id != "cb-1" {
			t.Errorf("Verify with one of the secrets: %q, %v", id, err)
		}
	}
	for _, tc := range []struct {
		name string
		h    http.Header
		body []byte
		now  time.Time
		sec  string
		want error
	}{
		{"tampered body", h, []byte(`{"data":[1]}`), now, newSec, ErrNoMatch},
		{"wrong secret", h, body, now, other, ErrNoMatch},
		{"old", h, body, now.Add(6 * time.Minute), newSec, ErrTooOld},
		{"future", h, body, now.Add(-6 * time.Minute), newSec, ErrTooNew},
		{"other id", withHeader(h, HeaderID, "cb-2"), body, now, newSec, ErrNoMatch},
		{"other timestamp", withHeader(h, HeaderTimestamp, "1800000001"), body, now, newSec, ErrNoMatch},
		{"bad timestamp", withHeader(h, HeaderTimestamp, "soon"), body, now, newSec, ErrBadTimestamp},
		{"no signature", withHeader(h, HeaderSignature, ""), body, now, newSec, ErrMissingHeaders},
		{"v2 only", withHeader(h, HeaderSignature, strings.ReplaceAll(h.Get(HeaderSignature), "v1,", "v2,")), body, now, newSec, ErrNoMatch},
	} {
		if _, err := Verify(tc.h, tc.body, tc.now, DefaultTolerance, mustSecret(t, tc.sec)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func withHeader(h http.Header, name, value string) http.Header {
	c := h.Clone()
	c.Set(name, value)
	return c
}

// webhookCheck and webhookAnswer are the protocol of
// scripts/interop/webhook-verify.mjs.
type webhookCheck struct {
	Secret     string            `json:"secret"`
	Headers    map[string]string `json:"headers"`
	BodyBase64 string            `json:"body_base64"`
}

type webhookAnswer struct {
	Results []struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"results"`
}

// verifyWithStandardWebhooks asks the official standardwebhooks npm
// package (scripts/interop) to verify each message, or skips the test
// when node or the package is missing. It returns "" for a message that
// verifies, else the library's error.
func verifyWithStandardWebhooks(t *testing.T, checks []webhookCheck) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the Standard Webhooks interop test needs it")
	}
	dir := filepath.Join("..", "scripts", "interop")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks")); err != nil {
		t.Skip("scripts/interop/node_modules/standardwebhooks is missing; run `npm ci --prefix scripts/interop` first")
	}
	in, err := json.Marshal(map[string]any{"checks": checks})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "webhook-verify.mjs"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("webhook-verify.mjs: %v\n%s", err, stderr.String())
	}
	var ans webhookAnswer
	if err := json.Unmarshal(out, &ans); err != nil || len(ans.Results) != len(checks) {
		t.Fatalf("webhook-verify.mjs answered %q: %v", out, err)
	}
	errs := make([]string, len(checks))
	for i, r := range ans.Results {
		if !r.OK {
			errs[i] = r.Error
			if errs[i] == "" {
				errs[i] = "failed"
			}
		}
	}
	return errs
}

// TestInteropStandardWebhooks signs messages here and verifies them with
// the official standardwebhooks package: each of two rotation secrets
// verifies a doubly signed message; a tampered body, a wrong secret and
// an old timestamp fail there.
func TestInteropStandardWebhooks(t *testing.T) {
	oldSec, newSec := NewSecret(), NewSecret()
	signer, err := NewSigner(newSec, oldSec)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"data":[{"document_id":"aadhaar-1","file_data":{"aadhaar_number":{"value":"XXXXXXXX0123"}}}],"note":"ünïcødé"}`)
	headers := func(at time.Time, b []byte) map[string]string {
		h := http.Header{}
		signer.SetHeaders(h, "0123456789abcdef0123456789abcdef", at, b)
		return map[string]string{
			"webhook-id":        h.Get(HeaderID),
			"webhook-timestamp": h.Get(HeaderTimestamp),
			"webhook-signature": h.Get(HeaderSignature),
		}
	}
	now := time.Now()
	good := headers(now, body)
	b64 := base64.StdEncoding.EncodeToString
	checks := []struct {
		name string
		webhookCheck
		ok   bool
		want string
	}{
		{"new secret", webhookCheck{newSec, good, b64(body)}, true, ""},
		{"old secret", webhookCheck{oldSec, good, b64(body)}, true, ""},
		{"spec example", webhookCheck{specSecret, map[string]string{
			"webhook-id": specID, "webhook-timestamp": good["webhook-timestamp"],
			"webhook-signature": mustSecret(t, specSecret).Sign(specID, now.Unix(), []byte(specBody)),
		}, b64([]byte(specBody))}, true, ""},
		{"tampered body", webhookCheck{newSec, good, b64(bytes.Replace(body, []byte("0123"), []byte("0124"), 1))}, false, "No matching signature"},
		{"wrong secret", webhookCheck{NewSecret(), good, b64(body)}, false, "No matching signature"},
		{"old timestamp", webhookCheck{newSec, headers(now.Add(-10*time.Minute), body), b64(body)}, false, "too old"},
	}
	in := make([]webhookCheck, len(checks))
	for i, c := range checks {
		in[i] = c.webhookCheck
	}
	for i, got := range verifyWithStandardWebhooks(t, in) {
		c := checks[i]
		if c.ok && got != "" {
			t.Errorf("%s: standardwebhooks refused it: %s", c.name, got)
		}
		if !c.ok && !strings.Contains(got, c.want) {
			t.Errorf("%s: standardwebhooks said %q, want %q", c.name, got, c.want)
		}
	}
}

func BenchmarkSign16KiB(b *testing.B) {
	signer, err := NewSigner(NewSecret())
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 16<<10)
	h := http.Header{}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		signer.SetHeaders(h, "0123456789abcdef0123456789abcdef", time.Now(), body)
	}
}

// FuzzVerify feeds Verify arbitrary headers and bodies, as an app's
// receiver would get them: it never panics, and it accepts a message only
// when one of its signatures is the message's signature under the key.
func FuzzVerify(f *testing.F) {
	sec := mustSecret(f, specSecret)
	f.Add(specID, "1614265330", specSignature, []byte(specBody))
	f.Add("id", "1614265330", "v1,a v1,"+sec.Sign("id", 1614265330, nil)+" v2,x", []byte(nil))
	f.Add("", "-1", "v1,", []byte("{}"))
	f.Add("x", "99999999999999999999", "v1,,,", []byte("x"))
	f.Fuzz(func(t *testing.T, id, ts, sigs string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sigs)
		got, err := Verify(h, body, time.Unix(1614265330, 0), DefaultTolerance, sec)
		if err != nil {
			return
		}
		n, perr := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
		if perr != nil || got != h.Get(HeaderID) {
			t.Fatalf("accepted id %q, timestamp %q", got, ts)
		}
		want := sec.Sign(h.Get(HeaderID), n, body)
		if !slices.Contains(strings.Fields(h.Get(HeaderSignature)), want) {
			t.Fatalf("accepted %q without the signature %s", sigs, want)
		}
	})
}

// TestSignerNeverPrintsItsKeys: a Signer printed with fmt, by pointer or
// value, in any verb, shows none of its key bytes.
func TestSignerNeverPrintsItsKeys(t *testing.T) {
	raw := NewSecret()
	s, err := NewSigner(raw)
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprint(s.secrets[0].key)
	for _, out := range []string{fmt.Sprintf("%v", s), fmt.Sprintf("%+v", *s), fmt.Sprintf("%#v", s), fmt.Sprint(*s)} {
		if strings.Contains(out, key[1:len(key)-1]) || strings.Contains(out, raw[len(Prefix):]) {
			t.Errorf("the signer prints its key: %s", out)
		}
	}
}
