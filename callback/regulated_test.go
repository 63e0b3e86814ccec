package callback

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/mask"
	"github.com/caddy-atlas/caddy-atlas/queue"
	"github.com/caddy-atlas/caddy-atlas/whsign"
)

// regulatedBody is a callback payload with an Aadhaar number and a name.
const regulatedBody = `{"data":[{"document_id":"a-1","file_data":{"document_type":"AADHAAR",` +
	`"aadhaar_number":{"value":"2345 6789 0123","confidence_score":0.97,"redact_url":"https://x/r.jpg"},` +
	`"name":{"value":"Ajay Kumar","confidence_score":0.9}}}]}`

// TestCallbackMaskedSignedHandOff checks the synchronous hand-off with a
// masker and two delivery secrets: the app gets the masked body, its
// length, and both signatures over it, under the id of Atlas's body; a
// client's own webhook-* headers are replaced.
func TestCallbackMaskedSignedHandOff(t *testing.T) {
	m, err := mask.New(map[string]mask.Style{"aadhaar_number": mask.Last4, "name": mask.Redact})
	if err != nil {
		t.Fatal(err)
	}
	sec1, sec2 := whsign.NewSecret(), whsign.NewSecret()
	c := &Callback{SignDeliveries: []string{sec1, sec2}}
	c.SetMasker(m)
	provisionTestCallback(t, c)
	tok := callbackAuthToken(t, c)

	req := callbackTestRequest("/hooks/atlas", tok, []byte(regulatedBody))
	req.Header.Set("Webhook-Signature", "v1,Zm9yZ2Vk")
	req.Header.Set("Webhook-Id", "forged")
	rec, app := serveTestCallback(t, c, req)
	if rec.Code != http.StatusAccepted || app.calls != 1 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	want := strings.NewReplacer(`"2345 6789 0123"`, `"XXXXXXXX0123"`, `"Ajay Kumar"`, `"REDACTED"`).Replace(regulatedBody)
	if string(app.body) != want {
		t.Fatalf("app body\n%s\nwant\n%s", app.body, want)
	}
	if app.req.ContentLength != int64(len(want)) || app.header.Get("Content-Length") != strconv.Itoa(len(want)) {
		t.Errorf("content length %d / %q for %d bytes", app.req.ContentLength, app.header.Get("Content-Length"), len(want))
	}
	id := ID([]byte(regulatedBody))
	if app.header.Get("X-Atlas-Callback-Id") != id || app.header.Get(whsign.HeaderID) != id {
		t.Errorf("ids %q and %q, want %s (Atlas's body)", app.header.Get("X-Atlas-Callback-Id"), app.header.Get(whsign.HeaderID), id)
	}
	for _, s := range []string{sec1, sec2} {
		sec, _ := whsign.ParseSecret(s)
		if _, err := whsign.Verify(app.header, app.body, time.Now(), whsign.DefaultTolerance, sec); err != nil {
			t.Errorf("signature: %v", err)
		}
	}
	if strings.Contains(app.header.Get(whsign.HeaderSignature), "Zm9yZ2Vk") {
		t.Error("the client's signature reached the app")
	}
}

// TestCallbackNoMaskNoSignature checks that without mask and
// sign_deliveries nothing changes: the body byte for byte, no webhook-*
// header added (a client's is left as the route found it).
func TestCallbackNoMaskNoSignature(t *testing.T) {
	c := &Callback{}
	provisionTestCallback(t, c)
	tok := callbackAuthToken(t, c)
	rec, app := serveTestCallback(t, c, callbackTestRequest("/hooks/atlas", tok, []byte(regulatedBody)))
	if rec.Code != http.StatusAccepted || string(app.body) != regulatedBody {
		t.Fatalf("status %d, body %s", rec.Code, app.body)
	}
	if app.header.Get(whsign.HeaderSignature) != "" || app.header.Get(whsign.HeaderTimestamp) != "" {
		t.Errorf("webhook headers without sign_deliveries: %v", app.header)
	}
}

// TestCallbackSignAttempt checks the durable per-attempt hook: each call
// signs at its own time.
func TestCallbackSignAttempt(t *testing.T) {
	sec := whsign.NewSecret()
	c := &Callback{SignDeliveries: []string{sec}}
	provisionTestCallback(t, c)
	now := time.Unix(1_900_000_000, 0)
	c.now = func() time.Time { return now }
	parsed, _ := whsign.ParseSecret(sec)
	var sigs []string
	for i := range 2 {
		h := http.Header{}
		d := queue.Delivery{ID: "cb-1", Body: []byte(`{"data":[]}`), Attempt: i + 1}
		c.signAttempt(h, d)
		if _, err := whsign.Verify(h, d.Body, now, whsign.DefaultTolerance, parsed); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
		if h.Get(whsign.HeaderTimestamp) != strconv.FormatInt(now.Unix(), 10) {
			t.Errorf("attempt %d timestamp %s", i+1, h.Get(whsign.HeaderTimestamp))
		}
		sigs = append(sigs, h.Get(whsign.HeaderSignature))
		now = now.Add(90 * time.Second)
	}
	if sigs[0] == sigs[1] {
		t.Error("two attempts at different times carry the same signature")
	}
}

// TestCallbackRotationCredentials checks the overlap forms: two client
// secrets accepted (and no other), a previous signing key that verifies
// its tokens but never signs.
func TestCallbackRotationCredentials(t *testing.T) {
	const oldKey = "0123456789abcdef0123456789abcdef-old-hmac-key"
	old := &Callback{SigningKey: oldKey}
	provisionTestCallback(t, old)
	oldTok := callbackAuthToken(t, old)

	c := &Callback{ClientSecrets: []string{"atlas-client-secret-next"}, PreviousSigningKeys: []string{oldKey}}
	provisionTestCallback(t, c)
	for secret, want := range map[string]bool{
		"atlas-client-secret": true, "atlas-client-secret-next": true, "atlas-client-secret-nex": false, "": false,
	} {
		if got := c.checkCredentials("atlas-client", secret); got != want {
			t.Errorf("secret %q accepted: %v, want %v", secret, got, want)
		}
	}
	if c.checkCredentials("someone-else", "atlas-client-secret-next") {
		t.Error("the second secret is accepted with another client id")
	}

	// The old key's token verifies; a token issued now is the new key's.
	rec, app := serveTestCallback(t, c, callbackTestRequest("/hooks/atlas", oldTok, []byte(regulatedBody)))
	if rec.Code != http.StatusAccepted || app.calls != 1 {
		t.Fatalf("a token of the previous signing key: %d %s", rec.Code, rec.Body)
	}
	newTok := callbackAuthToken(t, c)
	rec, _ = serveTestCallback(t, old, callbackTestRequest("/hooks/atlas", newTok, []byte(regulatedBody)))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("a token issued after the rotation verifies with the old key alone (%d): the previous key signed it", rec.Code)
	}
	if c.signer == nil || c.signer.KID() == old.signer.KID() {
		t.Error("the previous signing key signs")
	}

	// Without the previous key the old token is refused.
	c2 := &Callback{}
	provisionTestCallback(t, c2)
	if rec, _ := serveTestCallback(t, c2, callbackTestRequest("/hooks/atlas", oldTok, []byte(regulatedBody))); rec.Code != http.StatusUnauthorized {
		t.Errorf("a token of an unknown key: %d", rec.Code)
	}
}

// TestCallbackRegulatedConfigErrors checks the errors of the new
// settings, none of which shows a secret.
func TestCallbackRegulatedConfigErrors(t *testing.T) {
	const notASecret = "whsec_bm90LWEtdmFsaWQta2V5"
	for _, tc := range []struct {
		name string
		c    Callback
		want string
	}{
		{"empty extra client secret", Callback{ClientSecrets: []string{"{env.REG_UNSET_SECRET}"}}, "client_secrets[0] {env.REG_UNSET_SECRET} is empty: REG_UNSET_SECRET is not set"},
		{"empty previous key", Callback{PreviousSigningKeys: []string{"{env.REG_UNSET_KEY}"}}, "previous_signing_keys[0] {env.REG_UNSET_KEY} is empty: REG_UNSET_KEY is not set"},
		{"short previous key", Callback{PreviousSigningKeys: []string{"short"}}, "previous_signing_keys[0]:"},
		{"empty delivery secret", Callback{SignDeliveries: []string{"{env.REG_UNSET_WHSEC}"}}, "sign_deliveries[0] {env.REG_UNSET_WHSEC} is empty: REG_UNSET_WHSEC is not set"},
		{"short delivery secret", Callback{SignDeliveries: []string{notASecret}}, "sign_deliveries: webhook secret: the key is 15 bytes, want 24 to 64"},
		{"second delivery secret", Callback{SignDeliveries: []string{whsign.NewSecret(), "nope-" + notASecret}}, `sign_deliveries: secret 2: webhook secret must start with "whsec_"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Path, c.ClientID, c.ClientSecret, c.SigningKey = "/hooks/atlas", "atlas-client", "atlas-client-secret", testHMACSecret
			err, _ := provisionAndValidate(&c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "bm90LWEt") || strings.Contains(err.Error(), "short") {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}

// lateReader is a next handler that, like net/http's transport writing a
// request body after RoundTrip has returned, keeps the body and reads it
// only after the route is done with the request.
type lateReader struct{ bodies []io.ReadCloser }

func (l *lateReader) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	l.bodies = append(l.bodies, r.Body)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// TestCallbackMaskedBodyOutlivesTheRoute checks that a masked synchronous
// hand-off's body stays intact for as long as a reader holds it: the
// buffer it is read from must not go back to the pool, and be filled
// with the next callback's (another person's) data, when the route
// returns.
func TestCallbackMaskedBodyOutlivesTheRoute(t *testing.T) {
	m, err := mask.New(map[string]mask.Style{"aadhaar_number": mask.Last4, "name": mask.Redact})
	if err != nil {
		t.Fatal(err)
	}
	c := &Callback{}
	c.SetMasker(m)
	provisionTestCallback(t, c)
	tok := callbackAuthToken(t, c)

	app := new(lateReader)
	var want []string
	for i := range 20 {
		body := strings.Replace(regulatedBody, `"a-1"`, `"person-`+strconv.Itoa(i)+`"`, 1)
		body = strings.Replace(body, "Ajay Kumar", strings.Repeat("Ajay Kumar ", i), 1)
		m, _, err := m.Payload(nil, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(m))
		rec := httptest.NewRecorder()
		if err := c.ServeCallback(rec, callbackTestRequest("/hooks/atlas", tok, []byte(body)), app); err != nil {
			t.Fatal(err)
		}
	}
	for i, rc := range app.bodies {
		got, _ := io.ReadAll(rc)
		if string(got) != want[i] {
			t.Fatalf("callback %d: the app read\n%s\nwant\n%s", i, got, want[i])
		}
	}
}
