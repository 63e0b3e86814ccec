#!/usr/bin/env bash
# Runs the caddy-atlas demo: Caddy with the plugin and example.Caddyfile,
# the bundled Atlas simulator (port 8081) standing in for Atlas unless
# ATLAS_ENDPOINT names another one, durable callbacks spooled under
# .caddy-atlas-demo/spool, and a stand-in app (port 9000) that shows what
# it received. Demo credentials are filled in for whatever is unset.
#
# The binary is built into .caddy-atlas-demo/bin/caddy, then exec'd: the
# script's PID is Caddy's, so `kill <pid>` or Ctrl-C stops Caddy and
# frees every port. Everything the demo writes stays in
# .caddy-atlas-demo: Caddy's data directory (the Atlas token, the local
# CA) in data/, its config directory (autosave.json) in config/, the
# spool, the pidfile caddy.pid. Deleting the directory resets the demo.
# While one demo runs, a second start says so and exits 1.
#
# Environment: ATLAS_ENDPOINT, ATLAS_CLIENT_ID, ATLAS_CLIENT_SECRET,
# ATLAS_CALLBACK_CLIENT_ID, ATLAS_CALLBACK_CLIENT_SECRET,
# ATLAS_CALLBACK_SIGNING_KEY, ATLAS_SPOOL_DIR (default
# .caddy-atlas-demo/spool).
set -euo pipefail
cd "$(dirname "$0")/.."

demo=$PWD/.caddy-atlas-demo
pidfile=$demo/caddy.pid

# A second demo would find every port taken. The pidfile is Caddy's (run
# --pidfile); one left by a demo that was killed -9 names a process that
# is gone, or one that is not this demo's Caddy, and is ignored.
if pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
	if [ -r "/proc/$pid/cmdline" ]; then
		args=$(tr '\0' ' ' <"/proc/$pid/cmdline")
	else
		args=$(ps -p "$pid" -o args= 2>/dev/null || true)
	fi
	if [[ $args == *caddy*' run '* ]]; then
		echo "the demo is already running (PID $pid); stop it with Ctrl-C in its terminal or kill $pid" >&2
		exit 1
	fi
fi

mkdir -p "$demo/bin"
echo "building Caddy with caddy-atlas into .caddy-atlas-demo/bin/caddy (the first build takes a few minutes)" >&2
go build -o "$demo/bin/caddy" ./cmd/caddy

export ATLAS_ENDPOINT="${ATLAS_ENDPOINT:-http://localhost:8081}"
export ATLAS_CLIENT_ID="${ATLAS_CLIENT_ID:-demo-client}"
export ATLAS_CLIENT_SECRET="${ATLAS_CLIENT_SECRET:-demo-secret}"
export ATLAS_CALLBACK_CLIENT_ID="${ATLAS_CALLBACK_CLIENT_ID:-atlas}"
export ATLAS_CALLBACK_CLIENT_SECRET="${ATLAS_CALLBACK_CLIENT_SECRET:-atlas-callback-secret}"
# A fresh random HMAC key per run unless one is given.
export ATLAS_CALLBACK_SIGNING_KEY="${ATLAS_CALLBACK_SIGNING_KEY:-$(head -c 48 /dev/urandom | base64 | tr -d '\n')}"
export ATLAS_SPOOL_DIR="${ATLAS_SPOOL_DIR:-$demo/spool}"
# Caddy's data and config directories (caddy.AppDataDir, AppConfigDir):
# the Atlas token, the local CA and autosave.json, not in $HOME.
export XDG_DATA_HOME=$demo/data XDG_CONFIG_HOME=$demo/config

# The banner shows the callback credentials only if they are the demo's.
shown_secret='<your ATLAS_CALLBACK_CLIENT_SECRET>'
if [ "$ATLAS_CALLBACK_CLIENT_SECRET" = atlas-callback-secret ]; then
	shown_secret=$ATLAS_CALLBACK_CLIENT_SECRET
fi

cat >&2 <<BANNER

caddy-atlas demo (PID $$; stop it with Ctrl-C or kill $$)
  gateway    http://localhost:8080   /atlas/extracts, /atlas/multiupload; Atlas's callback_url
                                     /hooks/atlas and auth_url /hooks/atlas/auth
  Atlas      $ATLAS_ENDPOINT   (the simulator listens on http://localhost:8081)
  app        http://localhost:9000   a stand-in; what it received: http://localhost:9000/callbacks
  admin      http://localhost:2019   Caddy's admin API, /metrics, /atlas/callbacks
  spool      $ATLAS_SPOOL_DIR

Try, in another shell:
  # 1. upload two documents through the gateway (the app holds no Atlas credentials)
  n=\$RANDOM; batch=\$(curl -s localhost:8080/atlas/multiupload -H 'Content-Type: application/json' -d '{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://files.example.com/pan.pdf", "document_id": "pan-'\$n'"}, {"file_url": "https://files.example.com/aadhaar.pdf", "document_id": "aadhaar-'\$n'"}]}' | grep -o 'BATCH-[^"]*' | head -n 1); echo \$batch
  # 2. let the simulator play Atlas: it authenticates at the auth_url and POSTs the batch's results to the
  #    callback_url; the spool answers 202, then delivers to the app (run it again: "duplicate": true, not delivered twice)
  curl -s localhost:8081/_sim/callback -d '{"auth_url": "http://localhost:8080/hooks/atlas/auth", "callback_url": "http://localhost:8080/hooks/atlas", "client_id": "$ATLAS_CALLBACK_CLIENT_ID", "client_secret": "$shown_secret", "batch_id": "'\$batch'"}'
  # 3. what the app received, and what the spool holds
  curl -s localhost:9000/callbacks; $demo/bin/caddy atlas callbacks list --state delivered

BANNER

exec "$demo/bin/caddy" run --config example.Caddyfile --adapter caddyfile --pidfile "$pidfile"
