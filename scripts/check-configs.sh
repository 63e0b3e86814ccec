#!/usr/bin/env bash
# Checks every config file the repository ships, with one Caddy built from
# this checkout (cmd/caddy):
#
#   - every Caddyfile (example.Caddyfile, deploy/**) and every Caddyfile
#     embedded in a Kubernetes ConfigMap under deploy/: `caddy fmt --diff`
#     (formatted) and `caddy validate` (adapts and provisions), with
#     stand-in values for the environment and credential files they read;
#     those with `queue jetstream` against a real cluster of 3 JetStream
#     servers on loopback (scripts/natscheck, in JWT mode, its user's
#     credentials as nats.creds);
#   - every YAML file, and the JSON files under deploy/, parse
#     (scripts/configcheck), a manifest's workloads set every variable its
#     Caddyfiles read without a default; the StatefulSet's ConfigMap holds
#     deploy/Caddyfile as it is;
#   - the Kubernetes manifests decode strictly into the k8s.io/api types
#     and their objects refer to each other rightly: selectors, volumes,
#     ConfigMaps, claims, Services' target ports (scripts/k8scheck);
#   - deploy/systemd/*.service pass `systemd-analyze verify` without a
#     warning (systemd is installed from Debian's packages if missing);
#   - the Prometheus alerting rules pass `promtool check rules` and their
#     unit tests `promtool test rules` (promtool comes with Debian's
#     prometheus package, installed if missing);
#   - deploy/docker/build.sh, the Dockerfile's build step, builds Caddy
#     with xcaddy and the Dockerfile runs that script (SKIP_DOCKER_BUILD=1
#     skips the build);
#   - deploy/Caddyfile runs: that binary serves it on loopback ports
#     (28000-28999), with Caddy's local CA for the callback host and the
#     simulator for Atlas, and a token, a durable callback delivered to a
#     stand-in app, an upload and extracts through the gateway, and the
#     metrics are checked with curl; so is the Caddyfile of the JetStream
#     Deployment (deploy/kubernetes/caddy-atlas-jetstream.yaml), on that
#     cluster, the callback published to the stream and delivered.
#
# Run by .ci/run. Exits non-zero at the end if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
smoke_pids=()
# errexit holds in the trap too: a kill with no process left to kill
# must not turn the script's exit status into its own.
trap 'kill "${smoke_pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/configcheck" ./scripts/configcheck
caddy=$work/caddy

failed=0
fail() {
	echo "FAIL: $*" >&2
	failed=1
}

# Tracked and new (not ignored) files, so that a local run sees new ones.
files() { git ls-files --cached --others --exclude-standard "$@" | sort -u; }

# Stand-in values for what the Caddyfiles read: the demo's environment
# (see scripts/run.sh) and, for deploy/, credential files in a directory
# named by CREDENTIALS_DIRECTORY as systemd's LoadCredential= and the
# Kubernetes manifests provide it.
export ATLAS_ENDPOINT=http://localhost:8081
export ATLAS_CLIENT_ID=demo-client ATLAS_CLIENT_SECRET=demo-secret
export ATLAS_CALLBACK_CLIENT_ID=atlas ATLAS_CALLBACK_CLIENT_SECRET=atlas-callback-secret
ATLAS_CALLBACK_SIGNING_KEY=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
export ATLAS_CALLBACK_SIGNING_KEY
export ATLAS_SPOOL_DIR=$work/spool
ATLAS_SPOOL_ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export ATLAS_SPOOL_ENCRYPTION_KEY
# example.Caddyfile's access log.
export ATLAS_DEMO_DIR=$work/demo
export ATLAS_CALLBACK_HOST=callbacks.example.com
export ATLAS_DELIVER_TO=http://localhost:9000/hooks/atlas
export CREDENTIALS_DIRECTORY=$work/credentials
mkdir -p "$CREDENTIALS_DIRECTORY"
printf '%s\n' "$ATLAS_CLIENT_SECRET" >"$CREDENTIALS_DIRECTORY/atlas-client-secret"
printf '%s\n' "$ATLAS_CALLBACK_CLIENT_SECRET" >"$CREDENTIALS_DIRECTORY/atlas-callback-client-secret"
printf '%s\n' "$ATLAS_CALLBACK_SIGNING_KEY" >"$CREDENTIALS_DIRECTORY/atlas-callback-signing-key"
head -c 32 /dev/urandom | base64 >"$CREDENTIALS_DIRECTORY/atlas-callback-encryption-key"
export ATLAS_STORAGE_ROOT=$work/storage
# Caddy's own storage and autosave, away from $HOME.
export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config

# YAML and JSON; the Caddyfiles embedded in ConfigMaps go to $work/embedded.
mkdir -p "$work/embedded"
mapfile -t parsed < <(files '*.yml' '*.yaml' 'deploy/*.json')
embedded=()
if [ ${#parsed[@]} -gt 0 ]; then
	if out=$("$work/configcheck" -extract "$work/embedded" "${parsed[@]}"); then
		[ -n "$out" ] && mapfile -t embedded <<<"$out"
		echo "ok    parsed ${#parsed[@]} YAML/JSON file(s)"
	else
		fail "YAML/JSON parse"
	fi
fi

# The Kubernetes manifests against the API types: strict decoding into
# k8s.io/api, and the references between their objects. scripts/k8scheck
# is a module of its own, out of ./...'s reach: its test checks every
# manifest under deploy/kubernetes, and that it finds planted mistakes.
if go -C scripts/k8scheck test -count=1 . >"$work/k8scheck.out" 2>&1; then
	echo "ok    $(files 'deploy/kubernetes/*.yaml' | wc -l) Kubernetes manifest(s) against the API types (scripts/k8scheck)"
else
	cat "$work/k8scheck.out" >&2
	fail "scripts/k8scheck"
fi

mapfile -t caddyfiles < <(files '*Caddyfile' '*.caddyfile' | grep -v '^testdata/')

# The Caddyfiles with `queue jetstream` connect to NATS when they run
# (Caddy creates or checks the streams as the config starts; `caddy
# validate` connects to nothing): they get a real cluster of 3 JetStream servers on loopback, in operator (JWT)
# mode, run by scripts/natscheck, whose URLs become ATLAS_NATS_URLS and
# whose user's credentials become nats.creds.
if grep -lq 'queue jetstream' -- "${caddyfiles[@]}" "${embedded[@]}" 2>/dev/null; then
	go build -o "$work/natscheck" ./scripts/natscheck
	mkdir -p "$work/nats"
	"$work/natscheck" -dir "$work/nats" 2>"$work/natscheck.log" &
	nats_pid=$!
	smoke_pids+=("$nats_pid")
	for _ in $(seq 150); do
		[ -f "$work/nats/urls" ] || ! kill -0 "$nats_pid" 2>/dev/null && break
		sleep 0.1
	done
	if [ -f "$work/nats/urls" ]; then
		ATLAS_NATS_URLS=$(cat "$work/nats/urls")
		export ATLAS_NATS_URLS
		cp "$work/nats/user.creds" "$CREDENTIALS_DIRECTORY/nats.creds"
		echo "ok    a JetStream cluster of 3 on loopback for the queue jetstream Caddyfiles"
	else
		cat "$work/natscheck.log" >&2
		fail "scripts/natscheck: no JetStream cluster"
	fi
fi
for f in "${caddyfiles[@]}" "${embedded[@]}"; do
	[ -n "$f" ] || continue
	name=${f#"$work/embedded/"}
	if ! "$caddy" fmt --diff "$f" >"$work/fmt.out" 2>&1; then
		cat "$work/fmt.out" >&2
		fail "$name is not formatted (caddy fmt --diff)"
	fi
	if "$caddy" validate --config "$f" --adapter caddyfile >"$work/validate.out" 2>&1; then
		echo "ok    $name: caddy fmt, caddy validate"
	else
		tail -n 5 "$work/validate.out" >&2
		fail "$name does not validate"
	fi
done

# The ConfigMap carries deploy/Caddyfile itself, not a copy that drifts.
for f in "${embedded[@]}"; do
	case $f in
	*deploy_kubernetes_caddy-atlas.yaml--*) cmp -s "$f" deploy/Caddyfile || fail "the Caddyfile in ${f#"$work/embedded/"} differs from deploy/Caddyfile" ;;
	esac
done

# systemd units, with ExecStart= pointing at the built binary.
if ! command -v systemd-analyze >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
mkdir -p "$work/units"
for unit in deploy/systemd/*.service; do
	sed "s#/usr/local/bin/caddy#$caddy#g" "$unit" >"$work/units/${unit##*/}"
	if out=$(systemd-analyze verify "$work/units/${unit##*/}" 2>&1) && [ -z "$out" ]; then
		echo "ok    $unit: systemd-analyze verify"
	else
		echo "$out" >&2
		fail "$unit: systemd-analyze verify"
	fi
done

# Alerting rules and their unit tests.
if ! command -v promtool >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
for rules in deploy/prometheus/*.rules.yml; do
	if promtool check rules "$rules" >"$work/promtool.out" 2>&1; then
		echo "ok    $rules: promtool check rules ($(grep -o '[0-9]* rules found' "$work/promtool.out"))"
	else
		cat "$work/promtool.out" >&2
		fail "$rules: promtool check rules"
	fi
done
for tests in deploy/prometheus/*.rules.test.yml; do
	if promtool test rules "$tests" >"$work/promtool.out" 2>&1; then
		echo "ok    $tests: promtool test rules"
	else
		cat "$work/promtool.out" >&2
		fail "$tests: promtool test rules"
	fi
done

# The Dockerfile's build step, run here as the builder stage runs it.
if ! grep -q '^RUN .*deploy/docker/build.sh' deploy/docker/Dockerfile; then
	fail "deploy/docker/Dockerfile does not build with deploy/docker/build.sh"
fi
if [ "${SKIP_DOCKER_BUILD:-}" != 1 ]; then
	if deploy/docker/build.sh "$work/caddy-docker" >"$work/build.out" 2>&1; then
		echo "ok    deploy/docker/build.sh: $(tail -n 1 "$work/build.out")"
		"$work/caddy-docker" validate --config deploy/Caddyfile --adapter caddyfile >"$work/validate.out" 2>&1 ||
			fail "deploy/Caddyfile does not validate with the binary of deploy/docker/build.sh: $(tail -n 3 "$work/validate.out")"
	else
		tail -n 20 "$work/build.out" >&2
		fail "deploy/docker/build.sh"
	fi
fi

# deploy/Caddyfile, running. Caddy's own local CA stands in for the
# public one (a copy with local_certs and skip_install_trust); the
# simulator and the stand-in app run in a second Caddy.
smoke_run() {
	local bin=$1 caddyfile=$2 name=$3 metric=$4 dir=$work/smoke-$3
	mkdir -p "$dir"
	cat >"$dir/sim.Caddyfile" <<-'CADDY'
		{
			admin off
		}
		http://127.0.0.1:28081 {
			atlas_simulator {
				client_id smoke-client
				client_secret smoke-secret
			}
		}
		http://127.0.0.1:28900 {
			atlas_demo_app
			respond 404
		}
	CADDY
	sed 's/^\tadmin .*/&\n\tlocal_certs\n\tskip_install_trust/' "$caddyfile" >"$dir/Caddyfile"
	printf 'smoke-secret\n' >"$CREDENTIALS_DIRECTORY/atlas-client-secret"
	"$caddy" run --config "$dir/sim.Caddyfile" >"$dir/sim.log" 2>&1 &
	smoke_pids+=($!)
	ATLAS_CALLBACK_HOST=localhost ATLAS_ADMIN=localhost:28019 ATLAS_HTTP_PORT=28880 ATLAS_HTTPS_PORT=28443 \
		ATLAS_GATEWAY_PORT=28080 ATLAS_METRICS_PORT=28180 ATLAS_ENDPOINT=http://127.0.0.1:28081 \
		ATLAS_CLIENT_ID=smoke-client ATLAS_SPOOL_DIR=$dir/spool ATLAS_DELIVER_TO=http://127.0.0.1:28900/hooks/atlas \
		"$bin" run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/caddy.log" 2>&1 &
	smoke_pids+=($!)
	local out token batch code
	for _ in $(seq 50); do
		curl -sf -o /dev/null 127.0.0.1:28180/metrics && curl -s -o /dev/null 127.0.0.1:28900/ && break
		sleep 0.2
	done
	out=$(curl -sk -X POST https://localhost:28443/hooks/atlas/auth -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" \
		-H "Client-Secret: $(cat "$CREDENTIALS_DIRECTORY/atlas-callback-client-secret")")
	token=$(sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p' <<<"$out")
	[ -n "$token" ] || { echo "auth_url: $out" >&2; tail -n 5 "$dir/caddy.log" >&2; return 1; }
	code=$(curl -sk -o /dev/null -w '%{http_code}' -X POST https://localhost:28443/hooks/atlas/auth \
		-H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H 'Client-Secret: wrong')
	[ "$code" = 401 ] || { echo "auth_url with a wrong secret: $code" >&2; return 1; }
	code=$(curl -sk -o /dev/null -w '%{http_code}' https://localhost:28443/atlas/extracts)
	[ "$code" = 404 ] || { echo "the callback host serves /atlas/extracts: $code" >&2; return 1; }
	out=$(curl -sk -X POST https://localhost:28443/hooks/atlas -H "Token: $token" -H 'Content-Type: application/json' \
		-d '{"data": [{"document_id": "smoke-doc-1", "file_data": {}}]}')
	[[ $out == *'"status":"accepted"'* ]] || { echo "callback: $out" >&2; return 1; }
	for _ in $(seq 50); do
		out=$(curl -s 127.0.0.1:28900/callbacks)
		[[ $out == *smoke-doc-1* ]] && break
		sleep 0.1
	done
	[[ $out == *smoke-doc-1* ]] || { echo "the callback did not reach the app: $out" >&2; return 1; }
	out=$(curl -s 127.0.0.1:28080/atlas/multiupload -H 'Content-Type: application/json' \
		-d '{"product_type": "LOAN_APP", "file_urls": [{"file_url": "https://files.example.com/a.pdf", "document_id": "smoke-pan-1"}]}')
	batch=$(grep -o 'BATCH-[^"]*' <<<"$out" | head -n 1)
	[ -n "$batch" ] || { echo "upload through the gateway: $out" >&2; return 1; }
	code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:28080/atlas/extracts?batch_id=$batch")
	[ "$code" = 200 ] || { echo "extracts through the gateway: $code" >&2; return 1; }
	out=$(curl -s 127.0.0.1:28180/metrics)
	[[ $out == *"$metric"* ]] || { echo "no $metric on the metrics site" >&2; return 1; }
	out=$(grep '"level":"error"' "$dir/caddy.log" || true)
	[ -z "$out" ] || { echo "$out" | head -n 3 >&2; return 1; }
}
# smoke runs smoke_run and stops the processes it started, whatever
# its outcome, so that the next run has the ports.
smoke() {
	local before=${#smoke_pids[@]} rc=0
	smoke_run "$@" || rc=1
	kill "${smoke_pids[@]:before}" 2>/dev/null
	wait "${smoke_pids[@]:before}" 2>/dev/null || true
	smoke_pids=("${smoke_pids[@]:0:before}")
	return $rc
}
if ! command -v curl >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
smoke_bin=$caddy
[ -x "$work/caddy-docker" ] && smoke_bin=$work/caddy-docker
if smoke "$smoke_bin" deploy/Caddyfile spool 'caddy_atlas_spool_max_bytes{'; then
	echo "ok    deploy/Caddyfile runs: auth_url, a durable callback delivered, the gateway, metrics"
else
	fail "deploy/Caddyfile does not run as it should (run by ${smoke_bin##*/})"
fi
# The Deployment's Caddyfile, on the loopback JetStream cluster: the
# callback is published to the stream with 3 replicas, then delivered.
for f in "${embedded[@]}"; do
	case $f in
	*deploy_kubernetes_caddy-atlas-jetstream.yaml--*) ;;
	*) continue ;;
	esac
	if [ -z "${ATLAS_NATS_URLS:-}" ]; then
		fail "${f#"$work/embedded/"} not run: no JetStream cluster"
	elif ! smoke "$smoke_bin" "$f" jetstream 'caddy_atlas_jetstream_publish_seconds_count 1'; then
		fail "${f#"$work/embedded/"} does not run as it should (run by ${smoke_bin##*/})"
	elif [ -z "$(ls -A "$ATLAS_STORAGE_ROOT/atlas/tokens" 2>/dev/null)" ]; then
		fail "${f#"$work/embedded/"}: no Atlas token in the storage option's root ($ATLAS_STORAGE_ROOT)"
	else
		echo "ok    ${f#"$work/embedded/"} runs on 3 JetStream servers: auth_url, a callback through the stream delivered, the gateway, the token in the shared storage, metrics"
	fi
done
if [ -n "${nats_pid:-}" ]; then
	kill "$nats_pid" 2>/dev/null || true
	wait "$nats_pid" 2>/dev/null || true
	smoke_pids=()
fi

exit $failed
