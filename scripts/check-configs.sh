#!/usr/bin/env bash
# Checks every config file the repository ships, with one Caddy built from
# this checkout (cmd/caddy):
#
#   - every Caddyfile (example.Caddyfile, deploy/**) and every Caddyfile
#     embedded in a Kubernetes ConfigMap under deploy/: `caddy fmt --diff`
#     (formatted) and `caddy validate` (adapts and provisions), with
#     stand-in values for the environment and credential files they read;
#   - every YAML file, and the JSON files under deploy/, parse
#     (scripts/configcheck); the Kubernetes ConfigMap holds deploy/Caddyfile
#     as it is;
#   - deploy/systemd/*.service pass `systemd-analyze verify` without a
#     warning (systemd is installed from Debian's packages if missing);
#   - deploy/docker/build.sh, the Dockerfile's build step, builds Caddy
#     with xcaddy and the Dockerfile runs that script (SKIP_DOCKER_BUILD=1
#     skips the build).
#
# Run by .ci/run. Exits non-zero at the end if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
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
export ATLAS_CALLBACK_HOST=callbacks.example.com
export ATLAS_DELIVER_TO=http://localhost:9000/hooks/atlas
export CREDENTIALS_DIRECTORY=$work/credentials
mkdir -p "$CREDENTIALS_DIRECTORY"
printf '%s\n' "$ATLAS_CLIENT_SECRET" >"$CREDENTIALS_DIRECTORY/atlas-client-secret"
printf '%s\n' "$ATLAS_CALLBACK_CLIENT_SECRET" >"$CREDENTIALS_DIRECTORY/atlas-callback-client-secret"
printf '%s\n' "$ATLAS_CALLBACK_SIGNING_KEY" >"$CREDENTIALS_DIRECTORY/atlas-callback-signing-key"
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

mapfile -t caddyfiles < <(files '*Caddyfile' '*.caddyfile' | grep -v '^testdata/')
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
	*deploy_kubernetes_*) cmp -s "$f" deploy/Caddyfile || fail "the Caddyfile in ${f#"$work/embedded/"} differs from deploy/Caddyfile" ;;
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

# The Dockerfile's build step, run here as the builder stage runs it.
if ! grep -q '^RUN .*deploy/docker/build.sh' deploy/docker/Dockerfile; then
	fail "deploy/docker/Dockerfile does not build with deploy/docker/build.sh"
fi
if [ "${SKIP_DOCKER_BUILD:-}" != 1 ]; then
	if deploy/docker/build.sh "$work/caddy-docker" >"$work/build.out" 2>&1; then
		echo "ok    deploy/docker/build.sh: $(tail -n 1 "$work/build.out")"
		for f in deploy/Caddyfile; do
			"$work/caddy-docker" validate --config "$f" --adapter caddyfile >"$work/validate.out" 2>&1 ||
				fail "$f does not validate with the binary of deploy/docker/build.sh: $(tail -n 3 "$work/validate.out")"
		done
	else
		tail -n 20 "$work/build.out" >&2
		fail "deploy/docker/build.sh"
	fi
fi

exit $failed
