// webhook-verify.mjs plays an app behind caddy-atlas that checks signed
// deliveries with the official Standard Webhooks library (the
// standardwebhooks package), for TestWebhookInterop.
//
// It reads one JSON request on stdin and writes one JSON answer on stdout:
//
//   request: {checks: [{secret, headers: {name: value}, body_base64}]}
//   answer:  {results: [{ok: true} | {ok: false, error: "message"}]}
//
// Each check builds new Webhook(secret) and calls verify(body, headers),
// which also rejects a timestamp more than five minutes from now.
//
// Usage: node scripts/interop/webhook-verify.mjs < request.json
import { Webhook } from 'standardwebhooks';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

const request = JSON.parse(await readStdin());
const results = [];
for (const check of request.checks ?? []) {
  try {
    const wh = new Webhook(check.secret);
    wh.verify(Buffer.from(check.body_base64, 'base64'), check.headers, { jsonParse: false });
    results.push({ ok: true });
  } catch (err) {
    results.push({ ok: false, error: String(err?.message ?? err) });
  }
}
process.stdout.write(JSON.stringify({ results }) + '\n');
