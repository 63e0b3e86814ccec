// Package tokentest holds the keys and encodings that the tests of the
// callback route's tokens share.
package tokentest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// KeySet holds the asymmetric keys of the tests.
type KeySet struct {
	once sync.Once
	Ed   ed25519.PrivateKey
	EC   *ecdsa.PrivateKey
	EC2  *ecdsa.PrivateKey
	RSA  *rsa.PrivateKey
}

var testKeys KeySet

// Keys returns the test keys, generated once per test binary.
func Keys(t testing.TB) *KeySet {
	t.Helper()
	testKeys.once.Do(func() {
		var err error
		if _, testKeys.Ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
		if testKeys.EC, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if testKeys.EC2, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if testKeys.RSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return &testKeys
}

// PEMPrivate encodes a private key as PKCS #8 PEM.
func PEMPrivate(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// PEMPublic encodes a public key as PKIX PEM.
func PEMPublic(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

var weakRSA struct {
	once sync.Once
	key  *rsa.PrivateKey
}

// WeakRSA returns a 1024-bit RSA key, too weak for the route.
func WeakRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	weakRSA.once.Do(func() {
		var err error
		if weakRSA.key, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
			panic(err)
		}
	})
	return weakRSA.key
}

// SelfSigned returns a self-signed certificate of key, as PEM.
func SelfSigned(t testing.TB, key *ecdsa.PrivateKey) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "idp.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// Mint signs claims with key; kid is set when not empty.
func Mint(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing a %s test token: %v", method.Alg(), err)
	}
	return s
}
