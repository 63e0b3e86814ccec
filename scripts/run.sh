#!/usr/bin/env bash
# Runs Caddy with caddy-atlas and example.Caddyfile. The bundled Atlas
# simulator (port 8081) stands in for Atlas unless ATLAS_ENDPOINT names
# another one. Demo credentials are filled in for whatever is unset.
set -euo pipefail
cd "$(dirname "$0")/.."

export ATLAS_ENDPOINT="${ATLAS_ENDPOINT:-http://localhost:8081}"
export ATLAS_CLIENT_ID="${ATLAS_CLIENT_ID:-demo-client}"
export ATLAS_CLIENT_SECRET="${ATLAS_CLIENT_SECRET:-demo-secret}"
export ATLAS_CALLBACK_CLIENT_ID="${ATLAS_CALLBACK_CLIENT_ID:-atlas}"
export ATLAS_CALLBACK_CLIENT_SECRET="${ATLAS_CALLBACK_CLIENT_SECRET:-atlas-callback-secret}"
# A fresh random HMAC key per run unless one is given.
export ATLAS_CALLBACK_SIGNING_KEY="${ATLAS_CALLBACK_SIGNING_KEY:-$(head -c 48 /dev/urandom | base64 | tr -d '\n')}"

exec go run ./cmd/caddy run --config example.Caddyfile --adapter caddyfile
