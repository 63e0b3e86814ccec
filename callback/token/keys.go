package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// JWS algorithms of the supported key types.
const (
	HS256 = "HS256"
	EdDSA = "EdDSA"
	ES256 = "ES256"
	RS256 = "RS256"
)

// Bounds of key strength.
const (
	// MinHMACKeyBytes is the shortest HMAC signing secret accepted
	// (RFC 7518 §3.2: at least the hash output size).
	MinHMACKeyBytes = 32
	// MinRSABits is the smallest RSA modulus accepted.
	MinRSABits = 2048
)

// Key is a key the callback route signs or verifies tokens with. Each
// key serves exactly one algorithm, fixed by its type.
type Key struct {
	kid     string // RFC 7638 thumbprint, or the kid of a JWKS entry
	alg     string // HS256, EdDSA, ES256 or RS256
	public  any    // []byte, ed25519.PublicKey, *ecdsa.PublicKey or *rsa.PublicKey
	private any    // the signing key only: []byte or a crypto.Signer
	bits    int    // HMAC secret or RSA modulus size
	origin  string // where the key came from, for errors and logs
}

// Method returns the golang-jwt signing method of the key's algorithm.
func (k *Key) Method() jwt.SigningMethod {
	return jwt.GetSigningMethod(k.alg)
}

// CheckStrength reports a key too weak to be used.
func (k *Key) CheckStrength() error {
	switch k.alg {
	case HS256:
		if k.bits < MinHMACKeyBytes*8 {
			return fmt.Errorf("an HMAC secret must be at least %d bytes, this one has %d", MinHMACKeyBytes, k.bits/8)
		}
	case RS256:
		if k.bits < MinRSABits {
			return fmt.Errorf("an RSA key must have at least %d bits, this one has %d", MinRSABits, k.bits)
		}
	}
	return nil
}

// ParseSigningKey parses the signing_key setting: a PEM private key
// (PKCS #8, PKCS #1 or SEC 1), or else the bytes of an HMAC secret.
func ParseSigningKey(s string) (*Key, error) {
	if !strings.Contains(s, "-----BEGIN") {
		secret := []byte(s)
		return &Key{
			kid:     jwkThumbprint(map[string]string{"kty": "oct", "k": b64URL(secret)}),
			alg:     HS256,
			public:  secret,
			private: secret,
			bits:    len(secret) * 8,
			origin:  "signing_key",
		}, nil
	}
	block, err := firstPEMBlock(s)
	if err != nil {
		return nil, err
	}
	var priv any
	switch block.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(block.Bytes)
	case "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE":
		return nil, fmt.Errorf("PEM block %q holds no private key; the signing key must be private", block.Type)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("encrypted PEM private keys are not supported")
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing the %s PEM block: %w", block.Type, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", priv)
	}
	k, err := newPublicKey(signer.Public())
	if err != nil {
		return nil, err
	}
	k.private = signer
	k.origin = "signing_key"
	return k, nil
}

// ParseVerifyKey parses a verify_keys entry: a PEM public key (PKIX or
// PKCS #1), a certificate, or a private key whose public half is used.
// HMAC secrets are refused, so a public key can never be taken for one.
func ParseVerifyKey(s string) (*Key, error) {
	if !strings.Contains(s, "-----BEGIN") {
		return nil, errors.New("not a PEM public key (HMAC secrets are not accepted as verify keys)")
	}
	block, err := firstPEMBlock(s)
	if err != nil {
		return nil, err
	}
	var pub any
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
		k, err := ParseSigningKey(s)
		if err != nil {
			return nil, err
		}
		k.private = nil
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing the %s PEM block: %w", block.Type, err)
	}
	return newPublicKey(pub)
}

// firstPEMBlock returns the first PEM block of s that is not EC
// parameters (which `openssl ecparam -genkey` writes first).
func firstPEMBlock(s string) (*pem.Block, error) {
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM block found")
		}
		if block.Type != "EC PARAMETERS" {
			return block, nil
		}
	}
}

// newPublicKey returns the verification key of a public key, with its
// RFC 7638 thumbprint as kid.
func newPublicKey(pub any) (*Key, error) {
	switch pub := pub.(type) {
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return nil, errors.New("invalid Ed25519 public key")
		}
		return &Key{
			kid:    jwkThumbprint(map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64URL(pub)}),
			alg:    EdDSA,
			public: pub,
			bits:   256,
		}, nil
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA curve %s is not supported; use P-256", pub.Curve.Params().Name)
		}
		raw, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("invalid ECDSA public key: %w", err)
		}
		return &Key{
			kid:    jwkThumbprint(map[string]string{"kty": "EC", "crv": "P-256", "x": b64URL(raw[1:33]), "y": b64URL(raw[33:])}),
			alg:    ES256,
			public: pub,
			bits:   256,
		}, nil
	case *rsa.PublicKey:
		return &Key{
			kid:    jwkThumbprint(map[string]string{"kty": "RSA", "n": b64URL(pub.N.Bytes()), "e": b64URL(big.NewInt(int64(pub.E)).Bytes())}),
			alg:    RS256,
			public: pub,
			bits:   pub.N.BitLen(),
		}, nil
	}
	return nil, fmt.Errorf("unsupported public key type %T; use Ed25519, ECDSA P-256 or RSA", pub)
}

// jwkThumbprint is the RFC 7638 JWK thumbprint of a key's required members,
// base64url-encoded. encoding/json writes map keys sorted and without
// whitespace, which is the canonical form RFC 7638 asks for.
func jwkThumbprint(members map[string]string) string {
	j, _ := json.Marshal(members)
	sum := sha256.Sum256(j)
	return b64URL(sum[:])
}

func b64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwk is the subset of an RFC 7517 JSON Web Key used for verification.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid,omitempty"`
	Use    string   `json:"use,omitempty"`
	Alg    string   `json:"alg,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
}

// parseJWK returns the verification key of a JWKS entry. Symmetric keys,
// keys for encryption, other curves and weak RSA keys are refused.
func parseJWK(j jwk) (*Key, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, fmt.Errorf("use %q is not sig", j.Use)
	}
	if len(j.KeyOps) > 0 && !slices.Contains(j.KeyOps, "verify") {
		return nil, errors.New("key_ops does not include verify")
	}
	var (
		pub any
		err error
	)
	switch j.Kty {
	case "RSA":
		pub, err = jwkRSA(j)
	case "EC":
		pub, err = jwkEC(j)
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("OKP curve %q is not supported", j.Crv)
		}
		var x []byte
		if x, err = base64.RawURLEncoding.DecodeString(j.X); err == nil && len(x) != ed25519.PublicKeySize {
			err = errors.New("invalid Ed25519 x")
		}
		pub = ed25519.PublicKey(x)
	case "oct":
		return nil, errors.New("symmetric keys are not accepted from a JWKS")
	default:
		return nil, fmt.Errorf("unsupported kty %q", j.Kty)
	}
	if err != nil {
		return nil, err
	}
	k, err := newPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if j.Alg != "" && j.Alg != k.alg {
		return nil, fmt.Errorf("alg %q is not supported for a %s key (only %s)", j.Alg, j.Kty, k.alg)
	}
	if err := k.CheckStrength(); err != nil {
		return nil, err
	}
	if j.Kid != "" {
		k.kid = j.Kid
	}
	return k, nil
}

func jwkRSA(j jwk) (*rsa.PublicKey, error) {
	n, err := base64.RawURLEncoding.DecodeString(j.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("invalid RSA n")
	}
	e, err := base64.RawURLEncoding.DecodeString(j.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("invalid RSA e")
	}
	exp := int(new(big.Int).SetBytes(e).Int64())
	if exp < 3 || exp%2 == 0 {
		return nil, errors.New("invalid RSA e")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}, nil
}

func jwkEC(j jwk) (*ecdsa.PublicKey, error) {
	if j.Crv != "P-256" {
		return nil, fmt.Errorf("EC curve %q is not supported; only P-256", j.Crv)
	}
	x, errX := base64.RawURLEncoding.DecodeString(j.X)
	y, errY := base64.RawURLEncoding.DecodeString(j.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("invalid P-256 coordinates")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, errors.New("invalid P-256 point")
	}
	return pub, nil
}

// MethodsOf returns the algorithms that keys verify; with a JWKS, every
// asymmetric algorithm, since its keys may change.
func MethodsOf(keys []*Key, withJWKS bool) []string {
	var algs []string
	add := func(alg string) {
		if !slices.Contains(algs, alg) {
			algs = append(algs, alg)
		}
	}
	for _, k := range keys {
		add(k.alg)
	}
	if withJWKS {
		add(EdDSA)
		add(ES256)
		add(RS256)
	}
	return algs
}

// FindKey returns the key of keys with that kid, or nil.
func FindKey(keys []*Key, kid string) *Key {
	for _, k := range keys {
		if k.kid == kid {
			return k
		}
	}
	return nil
}

// ContainsKey reports whether keys already hold a key with k's kid and
// algorithm.
func ContainsKey(keys []*Key, k *Key) bool {
	for _, o := range keys {
		if o.alg == k.alg && o.kid == k.kid {
			return true
		}
	}
	return false
}

// KID returns the key id: the RFC 7638 thumbprint, or the kid of a JWKS
// entry.
func (k *Key) KID() string { return k.kid }

// Alg returns the one algorithm the key serves.
func (k *Key) Alg() string { return k.alg }

// Origin names where the key came from, for errors and logs.
func (k *Key) Origin() string { return k.origin }

// SetOrigin sets where the key came from, e.g. "verify_keys[0]".
func (k *Key) SetOrigin(origin string) { k.origin = origin }
