// mint.mjs plays an independent JOSE implementation (the jose package)
// for caddy-atlas's callback interop test, TestCallbackInteropJose.
//
// It reads one JSON request on stdin and writes one JSON answer on stdout:
//
//   request                                      answer
//   mint:    [{alg, key, kid?, claims}]          tokens:      [jwt]
//   publics: [{alg, pem, kid?}]                  thumbprints: [RFC 7638 thumbprint]
//                                                jwks:        {keys: [JWK]}
//   secrets: [string]                            secretThumbprints: [thumbprint]
//   verify:  [{alg, key, token, iss, aud}]       verified:    [{sub, kid} | {error}]
//
// alg is HS256, EdDSA, ES256 or RS256. For HS256, key is the secret's
// UTF-8 text; otherwise a PKCS #8 PEM private key (mint) or an SPKI PEM
// public key (verify).
//
// Usage: node scripts/interop/mint.mjs < request.json
import {
  SignJWT,
  jwtVerify,
  importPKCS8,
  importSPKI,
  exportJWK,
  calculateJwkThumbprint,
} from 'jose';

const utf8 = new TextEncoder();

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function secretKey(alg, key) {
  return alg === 'HS256' ? utf8.encode(key) : null;
}

const req = JSON.parse(await readStdin());
const out = { tokens: [], thumbprints: [], jwks: { keys: [] }, secretThumbprints: [], verified: [] };

for (const m of req.mint ?? []) {
  const key = secretKey(m.alg, m.key) ?? (await importPKCS8(m.key, m.alg));
  const header = { alg: m.alg, typ: 'JWT' };
  if (m.kid) header.kid = m.kid;
  out.tokens.push(await new SignJWT(m.claims).setProtectedHeader(header).sign(key));
}

for (const p of req.publics ?? []) {
  const key = await importSPKI(p.pem, p.alg, { extractable: true });
  const jwk = await exportJWK(key);
  out.thumbprints.push(await calculateJwkThumbprint(jwk, 'sha256'));
  out.jwks.keys.push({ ...jwk, ...(p.kid ? { kid: p.kid } : {}), alg: p.alg, use: 'sig' });
}

for (const s of req.secrets ?? []) {
  const k = Buffer.from(s, 'utf8').toString('base64url');
  out.secretThumbprints.push(await calculateJwkThumbprint({ kty: 'oct', k }, 'sha256'));
}

for (const v of req.verify ?? []) {
  try {
    const key = secretKey(v.alg, v.key) ?? (await importSPKI(v.key, v.alg));
    const { payload, protectedHeader } = await jwtVerify(v.token, key, {
      algorithms: [v.alg],
      issuer: v.iss,
      audience: v.aud,
      requiredClaims: ['exp', 'iat', 'nbf', 'jti', 'sub'],
    });
    out.verified.push({ sub: payload.sub, kid: protectedHeader.kid });
  } catch (err) {
    out.verified.push({ error: `${err.code ?? 'ERR'}: ${err.message}` });
  }
}

process.stdout.write(JSON.stringify(out) + '\n');
