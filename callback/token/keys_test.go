package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"

	"github.com/caddy-atlas/caddy-atlas/callback/token/tokentest"
)

// TestCallbackKeysThumbprintRFC7638 checks the kid against the example
// of RFC 7638 §3.1.
func TestCallbackKeysThumbprintRFC7638(t *testing.T) {
	j := jwk{
		Kty: "RSA",
		N: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs" +
			"tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbI" +
			"SD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
		E: "AQAB",
	}
	k, err := parseJWK(j)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; k.kid != want {
		t.Errorf("thumbprint %s, want %s", k.kid, want)
	}
}

// TestCallbackKeysPEMForms checks the PEM encodings accepted for the
// signing key and the verify keys.
func TestCallbackKeysPEMForms(t *testing.T) {
	k := tokentest.Keys(t)
	ecDER, _ := x509.MarshalECPrivateKey(k.EC)
	sec1 := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" +
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))
	pkcs1 := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.RSA)}))
	pkcs1Pub := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.RSA.PublicKey)}))

	for _, tc := range []struct {
		name, pem, alg string
	}{
		{"PKCS8 Ed25519", tokentest.PEMPrivate(t, k.Ed), EdDSA},
		{"PKCS8 ECDSA", tokentest.PEMPrivate(t, k.EC), ES256},
		{"SEC1 ECDSA after EC PARAMETERS", sec1, ES256},
		{"PKCS8 RSA", tokentest.PEMPrivate(t, k.RSA), RS256},
		{"PKCS1 RSA", pkcs1, RS256},
	} {
		key, err := ParseSigningKey(tc.pem)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if key.alg != tc.alg || key.private == nil {
			t.Errorf("%s: alg %s", tc.name, key.alg)
		}
		// The same key as a verify key has the same kid.
		pub, err := ParseVerifyKey(tc.pem)
		if err != nil || pub.kid != key.kid || pub.private != nil {
			t.Errorf("%s as a verify key: %v", tc.name, err)
		}
	}

	cert := tokentest.SelfSigned(t, k.EC)
	for _, tc := range []struct{ name, pem, alg string }{
		{"PKIX Ed25519", tokentest.PEMPublic(t, k.Ed.Public()), EdDSA},
		{"PKIX ECDSA", tokentest.PEMPublic(t, &k.EC.PublicKey), ES256},
		{"PKIX RSA", tokentest.PEMPublic(t, &k.RSA.PublicKey), RS256},
		{"PKCS1 RSA public", pkcs1Pub, RS256},
		{"certificate", cert, ES256},
	} {
		key, err := ParseVerifyKey(tc.pem)
		if err != nil || key.alg != tc.alg {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	ecKey, _ := ParseVerifyKey(tokentest.PEMPublic(t, &k.EC.PublicKey))
	certKey, _ := ParseVerifyKey(cert)
	if ecKey.kid != certKey.kid {
		t.Error("a certificate's key has another kid than the key itself")
	}
}

func TestCallbackKeysRefused(t *testing.T) {
	k := tokentest.Keys(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, pem, want string
		verify          bool
	}{
		{"P-384 signing key", tokentest.PEMPrivate(t, p384), "ECDSA curve P-384 is not supported; use P-256", false},
		{"P-384 verify key", tokentest.PEMPublic(t, &p384.PublicKey), "ECDSA curve P-384 is not supported", true},
		{"encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted PEM private keys are not supported", false},
		{"unknown block", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", `unsupported PEM block "OPENSSH PRIVATE KEY"`, false},
		{"certificate as signing key", tokentest.SelfSigned(t, k.EC), "holds no private key", false},
		{"not PEM", "-----BEGIN nothing", "no PEM block found", true},
	} {
		var err error
		if tc.verify {
			_, err = ParseVerifyKey(tc.pem)
		} else {
			_, err = ParseSigningKey(tc.pem)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestCallbackKeysJWK checks the JWKS entries accepted and refused.
func TestCallbackKeysJWK(t *testing.T) {
	k := tokentest.Keys(t)
	good := map[string]jwk{
		"RSA": callbackJWKOf(t, &k.RSA.PublicKey, "r1"),
		"EC":  callbackJWKOf(t, &k.EC.PublicKey, "e1"),
		"OKP": callbackJWKOf(t, k.Ed.Public(), "o1"),
	}
	for name, j := range good {
		key, err := parseJWK(j)
		if err != nil || key.kid != j.Kid {
			t.Errorf("%s: %v", name, err)
		}
		j.Kid = ""
		key, err = parseJWK(j)
		if err != nil {
			t.Fatal(err)
		}
		if fromPEM, _ := newPublicKey(key.public); key.kid != fromPEM.kid {
			t.Errorf("%s without kid: kid %s, want the thumbprint %s", name, key.kid, fromPEM.kid)
		}
	}

	weak := callbackJWKOf(t, &tokentest.WeakRSA(t).PublicKey, "weak")
	mod := func(j jwk, f func(*jwk)) jwk { f(&j); return j }
	for _, tc := range []struct {
		name string
		j    jwk
		want string
	}{
		{"oct", jwk{Kty: "oct", Kid: "h"}, "symmetric keys are not accepted"},
		{"enc", mod(good["RSA"], func(j *jwk) { j.Use = "enc" }), `use "enc" is not sig`},
		{"key_ops", mod(good["RSA"], func(j *jwk) { j.KeyOps = []string{"encrypt"} }), "key_ops does not include verify"},
		{"alg mismatch", mod(good["RSA"], func(j *jwk) { j.Alg = "PS256" }), `alg "PS256" is not supported`},
		{"HS256 on RSA", mod(good["RSA"], func(j *jwk) { j.Alg = "HS256" }), `alg "HS256" is not supported`},
		{"weak RSA", weak, "at least 2048 bits"},
		{"bad e", mod(good["RSA"], func(j *jwk) { j.E = "AA" }), "invalid RSA e"},
		{"P-384", mod(good["EC"], func(j *jwk) { j.Crv = "P-384" }), `EC curve "P-384" is not supported`},
		{"off curve", mod(good["EC"], func(j *jwk) { j.Y = j.X }), "invalid P-256 point"},
		{"X25519", mod(good["OKP"], func(j *jwk) { j.Crv = "X25519" }), `OKP curve "X25519"`},
		{"short x", mod(good["OKP"], func(j *jwk) { j.X = "AAAA" }), "invalid Ed25519 x"},
		{"unknown kty", jwk{Kty: "XYZ"}, `unsupported kty "XYZ"`},
	} {
		if _, err := parseJWK(tc.j); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// callbackJWKOf returns the JWK of a public key.
func callbackJWKOf(t testing.TB, pub any, kid string) jwk {
	t.Helper()
	key, err := newPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	j := jwk{Kid: kid, Use: "sig", Alg: key.alg}
	switch p := pub.(type) {
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64URL(p)
	case *ecdsa.PublicKey:
		raw, _ := p.Bytes()
		j.Kty, j.Crv, j.X, j.Y = "EC", "P-256", b64URL(raw[1:33]), b64URL(raw[33:])
	case *rsa.PublicKey:
		j.Kty, j.N, j.E = "RSA", b64URL(p.N.Bytes()), b64URL(big.NewInt(int64(p.E)).Bytes())
	}
	return j
}
