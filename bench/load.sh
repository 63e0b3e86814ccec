#!/usr/bin/env bash
# Load benchmark of the atlas routes against Caddy's own reverse_proxy, on
# loopback, in one run so that both sides see the same machine. Both sides
# talk to the same fast upstream, bench/upstream, run in its own process
# (it answers from bytes computed at startup), so that the figures measure
# the proxy and not the upstream:
#   a/b: extracts, a 6-document page (about 3 KB):
#        (a) reverse_proxy + `rewrite` + a static `header_up Token <t>`,
#        (b) the atlas extracts route (managed token);
#   e/f: the same with a 50-document page (about 25 KB);
#   c/d: callback, a 16 KiB payload (35 documents): (c) reverse_proxy to
#        the upstream's callback sink, (d) the atlas callback route (token
#        and payload checked) in front of the same reverse_proxy.
# Prints requests/s and p50/p99 latency for each run, and for each pair
# (b/a, f/e, d/c) every round's throughput and p99 ratios and their median.
# The two sides of a pair run back to back, in alternating order from round
# to round, so that the machine's drift falls on both.
#
# Usage: bench/load.sh [seconds per run, default 10] [connections, default 32]
# ROUNDS (default 3) sets the number of rounds; SIDES="a b" runs only those
# sides (default: all six).
# BASE_REV=<git revision> also builds the plugin at that revision and runs
# its atlas routes, in a second Caddy, as sides B (6 documents), F (50) and
# D (callback), so that a change is measured before and after in one run:
# the pairs b/B, f/F and d/D (default sides then: a b B e f F c d D).
# With PROFILE_DIR set, a CPU profile of Caddy during each run is saved there
# as cpu-<round>-<side>.pprof (go tool pprof -top cpu-1-b.pprof).
# Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-10}"
conns="${2:-32}"
rounds="${ROUNDS:-3}"
base_rev="${BASE_REV:-}"
if [ -n "$base_rev" ]; then
	sides="${SIDES:-a b B e f F c d D}"
else
	sides="${SIDES:-a b e f c d}"
fi
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy
if [ -n "$base_rev" ]; then
	mkdir "$work/base"
	git archive "$base_rev" | tar -x -C "$work/base"
	(cd "$work/base" && go build -o "$work/caddy-base" ./cmd/caddy)
fi

export ATLAS_CLIENT_ID=bench-client ATLAS_CLIENT_SECRET=bench-secret
export ATLAS_CALLBACK_CLIENT_ID=bench-atlas ATLAS_CALLBACK_CLIENT_SECRET=bench-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="bench-signing-key-0123456789-abcdefghijklmnop"

up=18091
start_upstream $up
BENCH_TOKEN="$(upstream_token $up)"
export BENCH_TOKEN

cat >"$work/Caddyfile" <<'CADDY'
{
	admin localhost:12019
	auto_https off
	persist_config off
	log {
		level ERROR
	}
}
# (a), (e) and (c): Caddy's own reverse_proxy
:18082 {
	rewrite /atlas/extracts /v1/docstream/extracts?{query}
	reverse_proxy localhost:18091 {
		header_up Token {$BENCH_TOKEN}
	}
}
:18083 {
	reverse_proxy localhost:18091
}
# (b), (f) and (d): the atlas routes
:18080 {
	atlas {
		endpoint      http://localhost:18091
		client_id     {env.ATLAS_CLIENT_ID}
		client_secret {env.ATLAS_CLIENT_SECRET}
		callback /hooks/atlas {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
		}
	}
	reverse_proxy localhost:18091
}
CADDY

HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" \
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
for _ in $(seq 100); do
	curl -fs -o /dev/null localhost:12019/config/ && break
	sleep 0.1
done
curl -fs -o /dev/null localhost:12019/config/ || { cat "$work/caddy.log" >&2; exit 1; }

if [ -n "$base_rev" ]; then
	# The same atlas site, at BASE_REV, on its own port.
	awk '/^# \(b\), \(f\) and \(d\)/ {on = 1} on' "$work/Caddyfile" | sed 's/^:18080 {/:18180 {/' >"$work/Caddyfile-base.site"
	{
		printf '{\n\tadmin localhost:12119\n\tauto_https off\n\tpersist_config off\n\tlog {\n\t\tlevel ERROR\n\t}\n}\n'
		cat "$work/Caddyfile-base.site"
	} >"$work/Caddyfile-base"
	HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" \
		"$work/caddy-base" run --config "$work/Caddyfile-base" --adapter caddyfile >"$work/caddy-base.log" 2>&1 &
	for _ in $(seq 100); do
		curl -fs -o /dev/null localhost:12119/config/ && break
		sleep 0.1
	done
	curl -fs -o /dev/null localhost:12119/config/ || { cat "$work/caddy-base.log" >&2; exit 1; }
fi

# Both sides must serve the same page before anything is measured.
for n in 6 50; do
	a="$(curl -fs "localhost:18082/atlas/extracts?batch_id=BENCH-$n" | sha256sum)"
	b="$(curl -fs "localhost:18080/atlas/extracts?batch_id=BENCH-$n" | sha256sum)"
	if [ "$a" != "$b" ]; then
		echo "the two sides serve different $n-document pages" >&2
		exit 1
	fi
	if [ -n "$base_rev" ] && [ "$(curl -fs "localhost:18180/atlas/extracts?batch_id=BENCH-$n" | sha256sum)" != "$a" ]; then
		echo "BASE_REV serves a different $n-document page" >&2
		exit 1
	fi
done
page6=$(curl -fs "localhost:18080/atlas/extracts?batch_id=BENCH-6" | wc -c)
page50=$(curl -fs "localhost:18080/atlas/extracts?batch_id=BENCH-50" | wc -c)

# The callback payload: a whole 35-document batch, at least 16 KiB, and a
# token from the callback route's auth endpoint.
curl -fs "localhost:$up/_payload?docs=35" >"$work/payload.json"
cbtoken="$(curl -fs -X POST -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H "Client-Secret: $ATLAS_CALLBACK_CLIENT_SECRET" \
	localhost:18080/hooks/atlas/auth | sed -E 's/.*"access_token": *"([^"]+)".*/\1/')"
payload_size=$(wc -c <"$work/payload.json")
if [ "$payload_size" -lt 16384 ]; then
	echo "the callback payload is $payload_size bytes, less than 16 KiB" >&2
	exit 1
fi
curl -fs -o /dev/null -H "Token: $cbtoken" -H 'Content-Type: application/json' --data-binary "@$work/payload.json" localhost:18080/hooks/atlas
cat >"$work/post.lua" <<LUA
local f = io.open("$work/payload.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Token"] = "$cbtoken"
LUA
if [ -n "$base_rev" ]; then
	basetoken="$(curl -fs -X POST -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H "Client-Secret: $ATLAS_CALLBACK_CLIENT_SECRET" \
		localhost:18180/hooks/atlas/auth | sed -E 's/.*"access_token": *"([^"]+)".*/\1/')"
	sed "s/$cbtoken/$basetoken/" "$work/post.lua" >"$work/post-base.lua"
fi

echo "caddy-atlas load benchmark: ${duration}s per run, $conns connections, $rounds rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "$base_rev" ] || echo "before: the atlas routes at $base_rev ($(git rev-parse --short "$base_rev")), sides B F D"
echo "upstream: bench/upstream, out of process; pages of 6 documents ($page6 bytes) and 50 ($page50 bytes); callback: $payload_size-byte payload"
declare -A round_rps round_p99 rps_ratios p99_ratios
for round in $(seq "$rounds"); do
	order="$sides"
	if [ $((round % 2)) -eq 0 ]; then
		# every other round, the sides run in the reverse order
		order="$(for s in $sides; do echo "$s"; done | tac | tr '\n' ' ')"
	fi
	for side in $order; do
		profiler=
		if [ -n "${PROFILE_DIR:-}" ]; then
			mkdir -p "$PROFILE_DIR"
			curl -fs -o "$PROFILE_DIR/cpu-$round-$side.pprof" \
				"localhost:12019/debug/pprof/profile?seconds=$((duration > 2 ? duration - 2 : 1))" &
			profiler=$!
		fi
		case $side in
		a) r=$(wrk_run a "http://localhost:18082/atlas/extracts?batch_id=BENCH-6") ;;
		b) r=$(wrk_run b "http://localhost:18080/atlas/extracts?batch_id=BENCH-6") ;;
		e) r=$(wrk_run e "http://localhost:18082/atlas/extracts?batch_id=BENCH-50") ;;
		f) r=$(wrk_run f "http://localhost:18080/atlas/extracts?batch_id=BENCH-50") ;;
		c) r=$(wrk_run c "http://localhost:18083/hooks/atlas" -s "$work/post.lua") ;;
		d) r=$(wrk_run d "http://localhost:18080/hooks/atlas" -s "$work/post.lua") ;;
		B) r=$(wrk_run B "http://localhost:18180/atlas/extracts?batch_id=BENCH-6") ;;
		F) r=$(wrk_run F "http://localhost:18180/atlas/extracts?batch_id=BENCH-50") ;;
		D) r=$(wrk_run D "http://localhost:18180/hooks/atlas" -s "$work/post-base.lua") ;;
		esac
		read -r rps p50 p99 <<<"$r"
		[ -z "$profiler" ] || wait "$profiler"
		printf 'round %d %s: %10.0f req/s  p50 %7.2f ms  p99 %7.2f ms\n' "$round" "$side" "$rps" "$p50" "$p99"
		round_rps[$side]=$rps
		round_p99[$side]=$p99
	done
	for pair in b/a f/e d/c b/B f/F d/D; do
		ours=${pair%/*} base=${pair#*/}
		if [ -n "${round_rps[$ours]:-}" ] && [ -n "${round_rps[$base]:-}" ]; then
			rps_ratios[$pair]+="$(ratio "${round_rps[$ours]}" "${round_rps[$base]}") "
			p99_ratios[$pair]+="$(ratio "${round_p99[$ours]}" "${round_p99[$base]}") "
		fi
	done
done
echo
declare -A what=([b/a]="extracts, 6 documents" [f/e]="extracts, 50 documents" [d/c]="callback, 16 KiB"
	[b/B]="after/before, 6 docs" [f/F]="after/before, 50 docs" [d/D]="after/before, callback")
declare -A target=([b/a]=">= 1.0, p99 <= 1.05" [f/e]=">= 1.0, p99 <= 1.05" [d/c]=">= 1.0"
	[b/B]="-" [f/F]="-" [d/D]="-")
for pair in b/a f/e d/c b/B f/F d/D; do
	[ -n "${rps_ratios[$pair]:-}" ] || continue
	# shellcheck disable=SC2086
	printf '%s %-22s throughput median %s (rounds %s), p99 median %s (rounds %s); target %s\n' "$pair" "${what[$pair]}:" \
		"$(median ${rps_ratios[$pair]})" "${rps_ratios[$pair]% }" "$(median ${p99_ratios[$pair]})" "${p99_ratios[$pair]% }" "${target[$pair]}"
done
