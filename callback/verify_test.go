package callback

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
	"github.com/caddy-atlas/caddy-atlas/internal/testutil"

	"github.com/caddy-atlas/caddy-atlas/callback/token"
)

// TestCallbackTokenIssuedPerKeyType checks the tokens auth_path issues
// for each kind of signing key: algorithm, kid, claims, and that the
// route verifies them.
func TestCallbackTokenIssuedPerKeyType(t *testing.T) {
	k := tokentest.Keys(t)
	for _, tc := range []struct {
		name, key, alg string
	}{
		{"hmac", testHMACSecret, "HS256"},
		{"ed25519", tokentest.PEMPrivate(t, k.Ed), "EdDSA"},
		{"ecdsa", tokentest.PEMPrivate(t, k.EC), "ES256"},
		{"rsa", tokentest.PEMPrivate(t, k.RSA), "RS256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Callback{SigningKey: tc.key, TokenTTL: caddy.Duration(10 * time.Minute)}
			provisionTestCallback(t, c)
			before := time.Now().Truncate(time.Second)
			raw := callbackAuthToken(t, c)

			parts := strings.Split(raw, ".")
			if len(parts) != 3 {
				t.Fatalf("token has %d parts", len(parts))
			}
			var hdr map[string]any
			callbackDecodeSegment(t, parts[0], &hdr)
			if hdr["alg"] != tc.alg || hdr["kid"] != c.signer.KID() || hdr["typ"] != "JWT" {
				t.Errorf("header = %v, want alg %s and kid %s", hdr, tc.alg, c.signer.KID())
			}
			var claims map[string]any
			callbackDecodeSegment(t, parts[1], &claims)
			if claims["iss"] != "caddy-atlas" || claims["sub"] != "atlas-client" {
				t.Errorf("iss/sub = %v/%v", claims["iss"], claims["sub"])
			}
			if aud, _ := claims["aud"].([]any); len(aud) != 1 || aud[0] != "atlas-callback" {
				t.Errorf("aud = %v", claims["aud"])
			}
			iat, _ := claims["iat"].(float64)
			nbf, _ := claims["nbf"].(float64)
			exp, _ := claims["exp"].(float64)
			if int64(iat) < before.Unix() || nbf != iat || exp-iat != 600 {
				t.Errorf("iat %v nbf %v exp %v: want nbf = iat >= %d and exp = iat + 600", iat, nbf, exp, before.Unix())
			}
			if jti, _ := claims["jti"].(string); len(jti) < 16 {
				t.Errorf("jti = %q", claims["jti"])
			}
			got, err := c.verifyToken(context.Background(), raw)
			if err != nil {
				t.Fatalf("verifying an issued token: %v", err)
			}
			if got.Subject != "atlas-client" {
				t.Errorf("subject = %q", got.Subject)
			}
			// Each token has its own jti.
			if other := callbackAuthToken(t, c); other == raw {
				t.Error("two tokens are identical")
			}
		})
	}
}

// TestCallbackTokenAttacks is the token attack list: each must fail
// verification.
func TestCallbackTokenAttacks(t *testing.T) {
	k := tokentest.Keys(t)
	rsaPubPEM := tokentest.PEMPublic(t, &k.RSA.PublicKey)
	c := &Callback{VerifyKeys: []string{rsaPubPEM, tokentest.PEMPublic(t, k.Ed.Public())}}
	provisionTestCallback(t, c)
	rsaKey, _ := token.ParseVerifyKey(rsaPubPEM)
	now := time.Now()
	hmacKey := []byte(testHMACSecret)
	rsaDER, _ := x509.MarshalPKIXPublicKey(&k.RSA.PublicKey)

	with := func(mut func(jwt.MapClaims)) jwt.MapClaims {
		cl := callbackClaims(c, now)
		mut(cl)
		return cl
	}
	valid := callbackClaims(c, now)
	noneToken := func(kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, valid)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tampered := func() string {
		good := tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", valid)
		parts := strings.Split(good, ".")
		forged := with(func(cl jwt.MapClaims) { cl["sub"] = "intruder" })
		payload, _ := json.Marshal(forged)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	}
	other := &Callback{SigningKey: "another-caddy-atlas-with-its-own-secret-key"}
	provisionTestCallback(t, other)

	for _, tc := range []struct {
		name, token, reason string
	}{
		{"garbage", "garbage", "malformed"},
		{"three garbage segments", "abc.def.ghi", "malformed"},
		{"alg none", noneToken(""), "bad signature or algorithm"},
		{"alg none with our kid", noneToken(c.signer.KID()), "bad signature or algorithm"},
		{"HS256 signed with the RSA public key PEM", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(rsaPubPEM), "", valid), "bad signature or algorithm"},
		{"HS256 with the RSA public key PEM and its kid", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(rsaPubPEM), rsaKey.KID(), valid), "no usable key"},
		{"HS256 with the RSA public key DER and its kid", tokentest.Mint(t, jwt.SigningMethodHS256, rsaDER, rsaKey.KID(), valid), "no usable key"},
		{"RS256 token naming the HMAC kid", tokentest.Mint(t, jwt.SigningMethodRS256, k.RSA, c.signer.KID(), valid), "no usable key"},
		{"ES256 not configured", tokentest.Mint(t, jwt.SigningMethodES256, k.EC, "", valid), "bad signature or algorithm"},
		{"HS512 not configured", tokentest.Mint(t, jwt.SigningMethodHS512, hmacKey, "", valid), "bad signature or algorithm"},
		{"PS256 with the RSA key", tokentest.Mint(t, jwt.SigningMethodPS256, k.RSA, "", valid), "bad signature or algorithm"},
		{"wrong signature", tampered(), "bad signature or algorithm"},
		{"wrong HMAC secret", tokentest.Mint(t, jwt.SigningMethodHS256, []byte("a-different-secret-that-is-32-bytes-long"), "", valid), "bad signature or algorithm"},
		{"token of another caddy-atlas", callbackAuthToken(t, other), "no usable key"},
		{"unknown kid", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "no-such-kid", valid), "no usable key"},
		{"expired beyond leeway", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) {
			cl["exp"] = now.Add(-61 * time.Second).Unix()
		})), "expired"},
		{"nbf in the future", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) {
			cl["nbf"] = now.Add(2 * time.Minute).Unix()
		})), "not valid yet"},
		{"iat in the future", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) {
			cl["iat"] = now.Add(2 * time.Minute).Unix()
		})), "issued in the future"},
		{"wrong iss", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { cl["iss"] = "evil" })), "wrong issuer"},
		{"missing iss", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { delete(cl, "iss") })), "missing claim"},
		{"wrong aud", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { cl["aud"] = "someone-else" })), "wrong audience"},
		{"missing aud", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { delete(cl, "aud") })), "missing claim"},
		{"missing exp", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { delete(cl, "exp") })), "missing claim"},
		{"exp not a number", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { cl["exp"] = "tomorrow" })), "malformed"},
		{"missing sub", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { delete(cl, "sub") })), "invalid"},
		{"sub with a newline", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", with(func(cl jwt.MapClaims) { cl["sub"] = "a\r\nX-Atlas-Subject: admin" })), "invalid"},
		{"kid not a string", tokentest.Mint(t, jwt.SigningMethodHS256, hmacKey, "", valid) /* replaced below */, "no usable key"},
		{"crit header", "", "no usable key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.token
			switch tc.name {
			case "kid not a string":
				tok := jwt.NewWithClaims(jwt.SigningMethodHS256, valid)
				tok.Header["kid"] = 7
				raw, _ = tok.SignedString(hmacKey)
			case "crit header":
				tok := jwt.NewWithClaims(jwt.SigningMethodHS256, valid)
				tok.Header["crit"] = []string{"exp"}
				raw, _ = tok.SignedString(hmacKey)
			}
			_, err := c.verifyToken(context.Background(), raw)
			if err == nil {
				t.Fatal("the token verified")
			}
			if got := token.FailureReason(err); got != tc.reason {
				t.Errorf("reason %q (%v), want %q", got, err, tc.reason)
			}
		})
	}
}

// TestCallbackTokenAccepted checks the tokens that must verify: each
// configured key, with or without kid, and the leeway.
func TestCallbackTokenAccepted(t *testing.T) {
	k := tokentest.Keys(t)
	c := &Callback{VerifyKeys: []string{tokentest.PEMPublic(t, &k.RSA.PublicKey), tokentest.PEMPublic(t, k.Ed.Public()), tokentest.PEMPublic(t, &k.EC.PublicKey)}}
	provisionTestCallback(t, c)
	now := time.Now()
	valid := callbackClaims(c, now)
	withinLeeway := callbackClaims(c, now)
	withinLeeway["exp"] = now.Add(-50 * time.Second).Unix()
	withinLeeway["nbf"] = now.Add(50 * time.Second).Unix()
	withinLeeway["iat"] = now.Add(50 * time.Second).Unix()
	kidOf := func(pub any) string {
		key, err := token.ParseVerifyKey(tokentest.PEMPublic(t, pub))
		if err != nil {
			t.Fatal(err)
		}
		return key.KID()
	}
	for _, tc := range []struct {
		name  string
		token string
	}{
		{"HS256 without kid", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(testHMACSecret), "", valid)},
		{"HS256 with kid", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(testHMACSecret), c.signer.KID(), valid)},
		{"RS256 without kid", tokentest.Mint(t, jwt.SigningMethodRS256, k.RSA, "", valid)},
		{"RS256 with kid", tokentest.Mint(t, jwt.SigningMethodRS256, k.RSA, kidOf(&k.RSA.PublicKey), valid)},
		{"EdDSA without kid", tokentest.Mint(t, jwt.SigningMethodEdDSA, k.Ed, "", valid)},
		{"EdDSA with kid", tokentest.Mint(t, jwt.SigningMethodEdDSA, k.Ed, kidOf(k.Ed.Public()), valid)},
		{"ES256 without kid", tokentest.Mint(t, jwt.SigningMethodES256, k.EC, "", valid)},
		{"ES256 with kid", tokentest.Mint(t, jwt.SigningMethodES256, k.EC, kidOf(&k.EC.PublicKey), valid)},
		{"within leeway", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(testHMACSecret), "", withinLeeway)},
		{"aud as an array", tokentest.Mint(t, jwt.SigningMethodHS256, []byte(testHMACSecret), "", func() jwt.MapClaims {
			cl := callbackClaims(c, now)
			cl["aud"] = []string{"other", "atlas-callback"}
			return cl
		}())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.verifyToken(context.Background(), tc.token); err != nil {
				t.Fatalf("rejected: %v", err)
			}
		})
	}
}

// TestCallbackTokenAsymmetricOnly checks that without an HMAC key no
// HS256 token verifies, whatever key it was made with.
func TestCallbackTokenAsymmetricOnly(t *testing.T) {
	k := tokentest.Keys(t)
	c := &Callback{SigningKey: tokentest.PEMPrivate(t, k.RSA)}
	provisionTestCallback(t, c)
	if got := c.verifier.Methods(); len(got) != 1 || got[0] != "RS256" {
		t.Fatalf("valid methods %v, want [RS256]", got)
	}
	valid := callbackClaims(c, time.Now())
	pubPEM := tokentest.PEMPublic(t, &k.RSA.PublicKey)
	for _, key := range [][]byte{[]byte(pubPEM), []byte(strings.TrimSpace(pubPEM))} {
		for _, kid := range []string{"", c.signer.KID()} {
			raw := tokentest.Mint(t, jwt.SigningMethodHS256, key, kid, valid)
			if _, err := c.verifyToken(context.Background(), raw); err == nil {
				t.Errorf("HS256 token made with the public key (kid %q) verified", kid)
			}
		}
	}
	if _, err := c.verifyToken(context.Background(), callbackAuthToken(t, c)); err != nil {
		t.Errorf("own token: %v", err)
	}
}

// TestCallbackTokenFromRequest checks where a token is taken from.
func TestCallbackTokenFromRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		header  http.Header
		target  string
		want    string
		wantErr bool
	}{
		{name: "Token header", header: http.Header{"Token": {"abc"}}, want: "abc"},
		{name: "bearer", header: http.Header{"Authorization": {"Bearer abc"}}, want: "abc"},
		{name: "bearer any case", header: http.Header{"Authorization": {"bearer abc"}}, want: "abc"},
		{name: "both equal", header: http.Header{"Token": {"abc"}, "Authorization": {"Bearer abc"}}, want: "abc"},
		{name: "both different", header: http.Header{"Token": {"abc"}, "Authorization": {"Bearer xyz"}}, wantErr: true},
		{name: "basic", header: http.Header{"Authorization": {"Basic YTpi"}}, wantErr: true},
		{name: "two Token headers", header: http.Header{"Token": {"abc", "xyz"}}, wantErr: true},
		{name: "query string only", target: "/hooks/atlas?token=abc&access_token=abc&Token=abc", wantErr: true},
		{name: "cookie only", header: http.Header{"Cookie": {"token=abc; Token=abc; access_token=abc"}}, wantErr: true},
		{name: "none", wantErr: true},
		{name: "too long", header: http.Header{"Token": {strings.Repeat("a", token.MaxBytes+1)}}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				target = "/hooks/atlas"
			}
			req := httptest.NewRequest(http.MethodPost, target, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			got, err := token.FromRequest(req)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("callbackRequestToken = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func callbackDecodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// TestCallbackTokenChallenge checks the answers of RFC 6750 (3.1): a
// callback without credentials (no token, or another scheme) gets a
// challenge without an error code and is told a token is required, one
// with a bad token gets invalid_token; both are 401. The reason is
// logged at info level, once per reason every rejectLogEvery with the
// count held back, never with the token.
func TestCallbackTokenChallenge(t *testing.T) {
	clock := testutil.NewClock(time.Now())
	c := &Callback{now: clock.Now}
	logs := provisionTestCallback(t, c)
	const forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmb3JnZWQifQ.Zm9yZ2VkLXNpZ25hdHVyZQ"
	for _, tc := range []struct {
		name, header, value string
		challenge, msg      string
		reason              string
	}{
		{"no token", "", "", `Bearer realm="atlas-callback"`, "a token is required: send the token issued at /hooks/atlas/auth in the Token header or as Authorization: Bearer", "no token"},
		{"Basic credentials", "Authorization", "Basic YTpi", `Bearer realm="atlas-callback"`, "a token is required", "not a Bearer credential"},
		{"forged token", "Token", forged, `Bearer error="invalid_token"`, "invalid or expired token", "bad signature or algorithm"},
		{"forged bearer", "Authorization", "Bearer " + forged, `Bearer error="invalid_token"`, "invalid or expired token", "bad signature or algorithm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.TakeAll()
			req := callbackTestRequest(c.Path, "", []byte(`{"data":[]}`))
			if tc.header != "" {
				req.Header.Set(tc.header, tc.value)
			}
			rec, _ := serveTestCallback(t, c, req)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", rec.Code)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			var body struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || !strings.HasPrefix(body.Error, tc.msg) {
				t.Errorf("body %q (%v), want an error starting with %q", rec.Body, err, tc.msg)
			}
			entries := logs.FilterMessage("callback rejected: token").All()
			if tc.name == "forged bearer" {
				// the same reason as the forged token's, within the interval
				if len(entries) != 0 {
					t.Errorf("%d log lines for a reason logged a moment ago, want none", len(entries))
				}
				return
			}
			if len(entries) != 1 || entries[0].Level != zapcore.InfoLevel || entries[0].ContextMap()["reason"] != tc.reason {
				t.Fatalf("log lines %v, want one at info level with reason %q", entries, tc.reason)
			}
			for _, e := range logs.All() {
				if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, forged) {
					t.Errorf("a log holds the token: %s", line)
				}
			}
		})
	}

	// After the interval, the next refusal of a reason is logged again,
	// with the count of those held back.
	logs.TakeAll()
	for range 3 {
		serveTestCallback(t, c, callbackTestRequest(c.Path, forged, []byte(`{}`)))
	}
	clock.Advance(rejectLogEvery)
	serveTestCallback(t, c, callbackTestRequest(c.Path, forged, []byte(`{}`)))
	entries := logs.FilterMessage("callback rejected: token").All()
	if len(entries) != 1 || entries[0].ContextMap()["suppressed"] != int64(4) {
		t.Fatalf("log lines %v, want one saying 4 were suppressed", entries)
	}
}
