package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
)

// joseRequest and joseAnswer are the protocol of scripts/interop/mint.mjs.
type joseRequest struct {
	Mint    []joseMint   `json:"mint,omitempty"`
	Publics []josePublic `json:"publics,omitempty"`
	Secrets []string     `json:"secrets,omitempty"`
	Verify  []joseVerify `json:"verify,omitempty"`
}

type joseMint struct {
	Alg    string         `json:"alg"`
	Key    string         `json:"key"`
	Kid    string         `json:"kid,omitempty"`
	Claims map[string]any `json:"claims"`
}

type josePublic struct {
	Alg string `json:"alg"`
	PEM string `json:"pem"`
	Kid string `json:"kid,omitempty"`
}

type joseVerify struct {
	Alg   string `json:"alg"`
	Key   string `json:"key"`
	Token string `json:"token"`
	Iss   string `json:"iss"`
	Aud   string `json:"aud"`
}

type joseAnswer struct {
	Tokens            []string        `json:"tokens"`
	Thumbprints       []string        `json:"thumbprints"`
	JWKS              json.RawMessage `json:"jwks"`
	SecretThumbprints []string        `json:"secretThumbprints"`
	Verified          []struct {
		Sub   string `json:"sub"`
		Kid   string `json:"kid"`
		Error string `json:"error"`
	} `json:"verified"`
}

// runCallbackJose runs scripts/interop/mint.mjs, or skips the test when node or
// the script's dependencies (npm ci --prefix scripts/interop) are
// missing.
func runCallbackJose(t *testing.T, req joseRequest) joseAnswer {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; the jose interop test needs it")
	}
	if _, err := os.Stat(filepath.Join("..", "scripts", "interop", "node_modules", "jose")); err != nil {
		t.Skip("scripts/interop/node_modules/jose is missing; run `npm ci --prefix scripts/interop` first")
	}
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("..", "scripts", "interop", "mint.mjs"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mint.mjs: %v\n%s", err, stderr.String())
	}
	var ans joseAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("mint.mjs answered %q: %v", out, err)
	}
	return ans
}

// TestCallbackInteropJose checks the route against the jose package: for
// each supported algorithm, tokens jose mints (with and without kid)
// verify, tokens the route issues verify in jose, and both compute the
// same RFC 7638 kid. Then a JWKS exported by jose, served by a test
// server, verifies jose's tokens, and a rotated key is picked up on an
// unknown kid.
func TestCallbackInteropJose(t *testing.T) {
	k := tokentest.Keys(t)
	type algCase struct {
		alg, private, public string
		c                    *Callback
	}
	cases := []*algCase{
		{alg: "HS256", private: testHMACSecret, public: testHMACSecret},
		{alg: "EdDSA", private: tokentest.PEMPrivate(t, k.Ed), public: tokentest.PEMPublic(t, k.Ed.Public())},
		{alg: "ES256", private: tokentest.PEMPrivate(t, k.EC), public: tokentest.PEMPublic(t, &k.EC.PublicKey)},
		{alg: "RS256", private: tokentest.PEMPrivate(t, k.RSA), public: tokentest.PEMPublic(t, &k.RSA.PublicKey)},
	}
	now := time.Now()
	claims := map[string]any{
		"iss": "caddy-atlas", "aud": "atlas-callback", "sub": "jose-client", "jti": "j-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
	var req joseRequest
	for _, tc := range cases {
		tc.c = &Callback{SigningKey: tc.private}
		provisionTestCallback(t, tc.c)
		req.Mint = append(req.Mint,
			joseMint{Alg: tc.alg, Key: tc.private, Kid: tc.c.signer.KID(), Claims: claims},
			joseMint{Alg: tc.alg, Key: tc.private, Claims: claims})
		req.Verify = append(req.Verify, joseVerify{Alg: tc.alg, Key: tc.public, Token: callbackAuthToken(t, tc.c), Iss: "caddy-atlas", Aud: "atlas-callback"})
		if tc.alg == "HS256" {
			req.Secrets = append(req.Secrets, tc.private)
		} else {
			req.Publics = append(req.Publics, josePublic{Alg: tc.alg, PEM: tc.public})
		}
	}
	ans := runCallbackJose(t, req)
	if len(ans.Tokens) != 2*len(cases) || len(ans.Verified) != len(cases) || len(ans.Thumbprints) != 3 || len(ans.SecretThumbprints) != 1 {
		t.Fatalf("mint.mjs answered %+v", ans)
	}

	pub := 0
	for i, tc := range cases {
		for j, tok := range ans.Tokens[2*i : 2*i+2] {
			if got, err := tc.c.verifyToken(context.Background(), tok); err != nil {
				t.Errorf("%s token %d from jose: %v", tc.alg, j, err)
			} else if got.Subject != "jose-client" {
				t.Errorf("%s token %d from jose: sub %q", tc.alg, j, got.Subject)
			}
		}
		if v := ans.Verified[i]; v.Error != "" || v.Sub != "atlas-client" || v.Kid != tc.c.signer.KID() {
			t.Errorf("jose on the %s token the route issued: %+v", tc.alg, v)
		}
		want := ""
		if tc.alg == "HS256" {
			want = ans.SecretThumbprints[0]
		} else {
			want = ans.Thumbprints[pub]
			pub++
		}
		if tc.c.signer.KID() != want {
			t.Errorf("%s kid %s, jose's RFC 7638 thumbprint %s", tc.alg, tc.c.signer.KID(), want)
		}
	}

	t.Run("jwks", func(t *testing.T) {
		testCallbackJoseJWKS(t, cases[1].private, cases[2].private, cases[1].public, cases[2].public)
	})
}

// testCallbackJoseJWKS serves a JWKS jose exported and checks that jose's tokens
// verify with it, then that a key rotated in is picked up on its kid.
func testCallbackJoseJWKS(t *testing.T, edPriv, ecPriv, edPub, ecPub string) {
	now := time.Now()
	claims := map[string]any{
		"iss": "caddy-atlas", "aud": "atlas-callback", "sub": "idp-client",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
	ans := runCallbackJose(t, joseRequest{
		Publics: []josePublic{{Alg: "EdDSA", PEM: edPub, Kid: "idp-ed-1"}, {Alg: "ES256", PEM: ecPub, Kid: "idp-ec-2"}},
		Mint: []joseMint{
			{Alg: "EdDSA", Key: edPriv, Kid: "idp-ed-1", Claims: claims},
			{Alg: "ES256", Key: ecPriv, Kid: "idp-ec-2", Claims: claims},
		},
	})
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(ans.JWKS, &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("jose's JWKS %s: %v", ans.JWKS, err)
	}

	var mu sync.Mutex
	served := `{"keys":[` + string(set.Keys[0]) + `]}` // the EdDSA key only
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write([]byte(served))
	}))
	defer srv.Close()

	clock := new(callbackTestClock)
	c := &Callback{JWKSURL: srv.URL, now: clock.now}
	provisionTestCallback(t, c)
	if _, err := c.verifyToken(context.Background(), ans.Tokens[0]); err != nil {
		t.Fatalf("jose's EdDSA token with the JWKS: %v", err)
	}
	if _, err := c.verifyToken(context.Background(), ans.Tokens[1]); err == nil {
		t.Fatal("a token of a key not yet in the JWKS verified")
	}
	mu.Lock()
	served = `{"keys":[` + string(set.Keys[1]) + `]}` // rotated: the ES256 key only
	mu.Unlock()
	clock.advance(31 * time.Second)
	if _, err := c.verifyToken(context.Background(), ans.Tokens[1]); err != nil {
		t.Fatalf("the rotated key was not picked up: %v", err)
	}
}
