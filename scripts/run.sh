#!/usr/bin/env bash
# Runs the caddy-atlas demo: Caddy with the plugin and example.Caddyfile,
# the bundled Atlas simulator standing in for Atlas unless ATLAS_ENDPOINT
# names another one, durable callbacks spooled (encrypted) under
# .caddy-atlas-demo/spool, and a stand-in app that shows what it
# received. Demo credentials are filled in for whatever is unset.
#
# The terminal tells the demo's story, one plain line each: what the
# simulator does as Atlas ("atlas: ...") and what the app gets ("app:
# ..."). Caddy's own log goes to .caddy-atlas-demo/caddy.log, its errors
# also to the terminal; the access log to .caddy-atlas-demo/access.log.
#
# The binary is built into .caddy-atlas-demo/bin/caddy, then exec'd: the
# script's PID is Caddy's, so `kill <pid>` or Ctrl-C stops Caddy and
# frees every port. Everything the demo writes stays in
# .caddy-atlas-demo: Caddy's data directory (the Atlas token, the local
# CA) in data/, its config directory (autosave.json) in config/, the
# spool and its encryption key (spool-key), the logs, the pidfile
# caddy.pid. Deleting the directory resets the demo. While one demo
# runs, a second start says so and exits 1.
#
# Environment: ATLAS_ENDPOINT, ATLAS_CLIENT_ID, ATLAS_CLIENT_SECRET,
# ATLAS_CALLBACK_CLIENT_ID, ATLAS_CALLBACK_CLIENT_SECRET,
# ATLAS_CALLBACK_SIGNING_KEY, ATLAS_SPOOL_DIR (default
# .caddy-atlas-demo/spool), ATLAS_SPOOL_ENCRYPTION_KEY (default the key
# in .caddy-atlas-demo/spool-key, made at the first start); the ports
# ATLAS_GATEWAY_PORT, ATLAS_SIMULATOR_PORT, ATLAS_APP_PORT (default
# 8080, 8081, 9000) and the admin endpoint CADDY_ADMIN (default
# localhost:2019; caddy's commands read it too); ATLAS_DEMO_DIR (default
# .caddy-atlas-demo, for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p "${ATLAS_DEMO_DIR:-.caddy-atlas-demo}"
demo=$(cd "${ATLAS_DEMO_DIR:-.caddy-atlas-demo}" && pwd)
export ATLAS_DEMO_DIR=$demo
pidfile=$demo/caddy.pid
log=$demo/caddy.log
# How the banner names the demo's directory.
shown_demo=$demo
[ "$demo" = "$PWD/.caddy-atlas-demo" ] && shown_demo=.caddy-atlas-demo

export ATLAS_GATEWAY_PORT="${ATLAS_GATEWAY_PORT:-8080}"
export ATLAS_SIMULATOR_PORT="${ATLAS_SIMULATOR_PORT:-8081}"
export ATLAS_APP_PORT="${ATLAS_APP_PORT:-9000}"
export CADDY_ADMIN="${CADDY_ADMIN:-localhost:2019}"

# A second demo would share the first one's ports (Caddy listens with
# SO_REUSEPORT) and half the requests would reach each. The pidfile is
# Caddy's (run --pidfile); one left by a demo that was killed -9 names a
# process that is gone, or one that is not this demo's Caddy, and is
# ignored.
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
# The same goes for a demo of another checkout, or anything else on
# those ports.
for port in "$ATLAS_GATEWAY_PORT" "$ATLAS_SIMULATOR_PORT" "$ATLAS_APP_PORT" "${CADDY_ADMIN##*:}"; do
	if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "port $port is taken (another demo?); stop what listens there, or set ATLAS_GATEWAY_PORT, ATLAS_SIMULATOR_PORT, ATLAS_APP_PORT or CADDY_ADMIN" >&2
		exit 1
	fi
done

mkdir -p "$demo/bin"
echo "building Caddy with caddy-atlas into $shown_demo/bin/caddy (the first build takes a few minutes)" >&2
go build -o "$demo/bin/caddy" ./cmd/caddy

export ATLAS_ENDPOINT="${ATLAS_ENDPOINT:-http://localhost:$ATLAS_SIMULATOR_PORT}"
export ATLAS_CLIENT_ID="${ATLAS_CLIENT_ID:-demo-client}"
export ATLAS_CLIENT_SECRET="${ATLAS_CLIENT_SECRET:-demo-secret}"
export ATLAS_CALLBACK_CLIENT_ID="${ATLAS_CALLBACK_CLIENT_ID:-atlas}"
export ATLAS_CALLBACK_CLIENT_SECRET="${ATLAS_CALLBACK_CLIENT_SECRET:-atlas-callback-secret}"
# A fresh random HMAC key per run unless one is given.
export ATLAS_CALLBACK_SIGNING_KEY="${ATLAS_CALLBACK_SIGNING_KEY:-$(head -c 48 /dev/urandom | base64 | tr -d '\n')}"
export ATLAS_SPOOL_DIR="${ATLAS_SPOOL_DIR:-$demo/spool}"
# The spool's encryption key outlives a run, as the spool does.
if [ -z "${ATLAS_SPOOL_ENCRYPTION_KEY:-}" ]; then
	[ -s "$demo/spool-key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$demo/spool-key")
	ATLAS_SPOOL_ENCRYPTION_KEY=$(cat "$demo/spool-key")
fi
export ATLAS_SPOOL_ENCRYPTION_KEY
# Caddy's data and config directories (caddy.AppDataDir, AppConfigDir):
# the Atlas token, the local CA and autosave.json, not in $HOME.
export XDG_DATA_HOME=$demo/data XDG_CONFIG_HOME=$demo/config

# The banner shows the callback credentials only if they are the demo's.
shown_secret='<your ATLAS_CALLBACK_CLIENT_SECRET>'
if [ "$ATLAS_CALLBACK_CLIENT_SECRET" = atlas-callback-secret ]; then
	shown_secret=$ATLAS_CALLBACK_CLIENT_SECRET
fi
gw=localhost:$ATLAS_GATEWAY_PORT sim=localhost:$ATLAS_SIMULATOR_PORT app=localhost:$ATLAS_APP_PORT
address=
[ "$CADDY_ADMIN" = localhost:2019 ] || address=" --address $CADDY_ADMIN"

cat >&2 <<BANNER

caddy-atlas demo (PID $$; stop it with Ctrl-C or kill $$)
  gateway    http://$gw   /atlas/extracts, /atlas/multiupload; Atlas's callback_url
                                     /hooks/atlas and auth_url /hooks/atlas/auth
  Atlas      $ATLAS_ENDPOINT   (the simulator listens on http://$sim)
  app        http://$app   a stand-in; what it received: http://$app/callbacks
  admin      http://$CADDY_ADMIN   Caddy's admin API, /metrics, /atlas/callbacks
  spool      ${ATLAS_SPOOL_DIR/#"$demo"/$shown_demo} (encrypted)
  logs       $shown_demo/caddy.log (Caddy's), $shown_demo/access.log

Try, in another shell:
  # 1. upload two documents through the gateway (the app holds no Atlas credentials)
  n=\$RANDOM; batch=\$(curl -s $gw/atlas/multiupload -H 'Content-Type: application/json' -d '{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://files.example.com/pan.pdf", "document_id": "pan-'\$n'"}, {"file_url": "https://files.example.com/aadhaar.pdf", "document_id": "aadhaar-'\$n'"}]}' | grep -o 'BATCH-[^"]*' | head -n 1); echo \$batch
  # 2. let the simulator play Atlas: it authenticates at the auth_url and POSTs the batch's results to the
  #    callback_url; the spool answers 202, then delivers to the app (run it again: "duplicate": true, not delivered twice)
  curl -s $sim/_sim/callback -d '{"auth_url": "http://$gw/hooks/atlas/auth", "callback_url": "http://$gw/hooks/atlas", "client_id": "$ATLAS_CALLBACK_CLIENT_ID", "client_secret": "$shown_secret", "batch_id": "'\$batch'"}'
  # 3. what the app received, and what the spool holds
  curl -s $app/callbacks; $shown_demo/bin/caddy atlas callbacks list --state delivered$address

What happens is told below, one line each:
BANNER

# tell_errors appends Caddy's log (its standard error) to caddy.log and
# shows its errors on the terminal, one plain line each; the rest
# (startup, warnings a demo cannot act on) stays in the file. It ignores
# Ctrl-C: it reads until Caddy, stopping, closes its standard error.
tell_errors() {
	trap '' INT
	local line msg
	while IFS= read -r line; do
		printf '%s\n' "$line" >>"$log"
		case $line in
		'{"level":"error"'* | '{"level":"fatal"'* | '{"level":"panic"'*) ;;
		'{'*) continue ;;
		esac
		msg=$line
		if [[ $line =~ \"msg\":\"(([^\"\\]|\\.)*)\" ]]; then
			msg=${BASH_REMATCH[1]}
		fi
		if [[ $line =~ \"error\":\"(([^\"\\]|\\.)*)\" ]]; then
			msg+=": ${BASH_REMATCH[1]}"
		fi
		printf 'caddy: %s (more in %s)\n' "$msg" "$shown_demo/caddy.log" >&2
	done
}

exec "$demo/bin/caddy" run --config example.Caddyfile --adapter caddyfile --pidfile "$pidfile" 2> >(tell_errors)
