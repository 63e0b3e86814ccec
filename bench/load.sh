#!/usr/bin/env bash
# Load benchmark of the atlas routes against Caddy's own reverse_proxy, on
# loopback, in one run so that both sides see the same machine:
#   extracts: (a) reverse_proxy with a static `header_up Token <t>` and
#             (b) the atlas extracts route, against the same simulator;
#   callback: (c) reverse_proxy and (d) the atlas callback route, a 16 KiB
#             payload each, to the same fast app.
# Prints requests/s and p50/p99 latency for each, and the ratios b/a, d/c.
#
# Usage: bench/load.sh [seconds per run, default 15] [connections, default 32]
# ROUNDS (default 2) sets the number of rounds; SIDES="c d" runs only those
# sides (default: all four).
# With PROFILE_DIR set, a CPU profile of Caddy during each run is saved there
# as cpu-<round>-<side>.pprof (go tool pprof -top cpu-1-d.pprof).
# Besides the ratio of the mean throughputs, prints each round's ratio and
# their median, which one disturbed run moves less on a shared machine.
# Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-15}"
conns="${2:-32}"
rounds="${ROUNDS:-2}"
sides="${SIDES:-a b c d}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy

export ATLAS_CLIENT_ID=bench-client ATLAS_CLIENT_SECRET=bench-secret
export ATLAS_CALLBACK_CLIENT_ID=bench-atlas ATLAS_CALLBACK_CLIENT_SECRET=bench-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="bench-signing-key-0123456789-abcdefghijklmnop"

cat >"$work/Caddyfile" <<'CADDY'
{
	admin localhost:12019
	auto_https off
	log {
		level ERROR
	}
}
# the simulator: Atlas for both sides
:18081 {
	atlas_simulator {
		client_id     {env.ATLAS_CLIENT_ID}
		client_secret {env.ATLAS_CLIENT_SECRET}
		token_lifetime 24h
	}
}
# a fast app
:18090 {
	respond "ok" 200
}
# (a) and (c): Caddy's own reverse_proxy
:18082 {
	reverse_proxy localhost:18081 {
		header_up Token {$BENCH_TOKEN}
	}
}
:18083 {
	reverse_proxy localhost:18090
}
# (b) and (d): the atlas routes
:18080 {
	atlas {
		endpoint      http://localhost:18081
		client_id     {env.ATLAS_CLIENT_ID}
		client_secret {env.ATLAS_CLIENT_SECRET}
		callback /hooks/atlas {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
		}
	}
	reverse_proxy localhost:18090
}
CADDY

# A token for the static header of (a), taken from the simulator; {$BENCH_TOKEN}
# is substituted when the reload adapts the Caddyfile.
start_caddy() {
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
	for _ in $(seq 100); do
		curl -fs -o /dev/null localhost:12019/config/ && return 0
		sleep 0.1
	done
	cat "$work/caddy.log" >&2
	exit 1
}
export BENCH_TOKEN=unset
start_caddy
BENCH_TOKEN="$(curl -fs -X POST -H "Client-Id: $ATLAS_CLIENT_ID" -H "Client-Secret: $ATLAS_CLIENT_SECRET" \
	localhost:18081/v1/docstream/authtoken | sed -E 's/.*"access_token": *"([^"]+)".*/\1/')"
export BENCH_TOKEN
# Reload so that (a) uses the token.
"$work/caddy" reload --config "$work/Caddyfile" --adapter caddyfile --address localhost:12019 >/dev/null 2>&1

files="$(for i in $(seq 0 49); do printf '{"file_url":"https://files.example.com/%d.pdf","document_id":"doc-%04d"},' "$i" "$i"; done)"
batch="$(curl -fs -X POST -H "Token: $BENCH_TOKEN" -H 'Content-Type: application/json' \
	-d "{\"product_type\":\"LOAN_APP\",\"file_urls\":[${files%,}]}" localhost:18081/v1/docstream/multiupload |
	sed -E 's/.*"batch_id": *"([^"]+)".*/\1/')"

# The callback payload: the simulator's extraction payload for a batch,
# with enough documents (35) to make at least 16 KiB, and a token from the
# auth route.
ids="$(for i in $(seq 0 34); do printf '{"file_url":"https://f.example.com/%d","document_id":"cb-%04d"},' "$i" "$i"; done)"
cbbatch="$(curl -fs -X POST -H "Token: $BENCH_TOKEN" -H 'Content-Type: application/json' \
	-d "{\"product_type\":\"LOAN_APP\",\"file_urls\":[${ids%,}]}" localhost:18081/v1/docstream/multiupload |
	sed -E 's/.*"batch_id": *"([^"]+)".*/\1/')"
curl -fs -H "Token: $BENCH_TOKEN" "localhost:18081/v1/docstream/extracts?batch_id=$cbbatch" >"$work/payload.json"
cbtoken="$(curl -fs -X POST -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H "Client-Secret: $ATLAS_CALLBACK_CLIENT_SECRET" \
	localhost:18080/hooks/atlas/auth | sed -E 's/.*"access_token": *"([^"]+)".*/\1/')"
payload_size=$(wc -c <"$work/payload.json")
if [ "$payload_size" -lt 16384 ]; then
	echo "the callback payload is $payload_size bytes, less than 16 KiB" >&2
	exit 1
fi
cat >"$work/post.lua" <<LUA
local f = io.open("$work/payload.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Token"] = "$cbtoken"
LUA


echo "caddy-atlas load benchmark: ${duration}s per run, $conns connections, $rounds rounds, $(nproc) cores"
echo "extracts: 50 documents per response; callback: $payload_size-byte payload"
declare -A sum_rps sum_p50 sum_p99 round_rps round_ratios
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
# median of the numbers given
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for round in $(seq "$rounds"); do
	for side in $sides; do
		profiler=
		if [ -n "${PROFILE_DIR:-}" ]; then
			mkdir -p "$PROFILE_DIR"
			curl -fs -o "$PROFILE_DIR/cpu-$round-$side.pprof" \
				"localhost:12019/debug/pprof/profile?seconds=$((duration > 2 ? duration - 2 : 1))" &
			profiler=$!
		fi
		case $side in
		a) r=$(wrk_run a "http://localhost:18082/v1/docstream/extracts?batch_id=$batch&per_page=50") ;;
		b) r=$(wrk_run b "http://localhost:18080/atlas/extracts?batch_id=$batch&per_page=50") ;;
		c) r=$(wrk_run c "http://localhost:18083/hooks/atlas" -s "$work/post.lua") ;;
		d) r=$(wrk_run d "http://localhost:18080/hooks/atlas" -s "$work/post.lua") ;;
		esac
		read -r rps p50 p99 <<<"$r"
		[ -z "$profiler" ] || wait "$profiler"
		printf 'round %d %s: %10.0f req/s  p50 %7.2f ms  p99 %7.2f ms\n' "$round" "$side" "$rps" "$p50" "$p99"
		round_rps[$side]=$rps
		sum_rps[$side]=$(awk -v a="${sum_rps[$side]:-0}" -v b="$rps" 'BEGIN {print a + b}')
		sum_p50[$side]=$(awk -v a="${sum_p50[$side]:-0}" -v b="$p50" 'BEGIN {print a + b}')
		sum_p99[$side]=$(awk -v a="${sum_p99[$side]:-0}" -v b="$p99" 'BEGIN {print a + b}')
	done
	# Each round runs a side and its baseline back to back: their ratio
	# is a paired measurement, which the machine's drift disturbs less.
	for pair in b/a d/c; do
		if [ -n "${round_rps[${pair%/*}]:-}" ] && [ -n "${round_rps[${pair#*/}]:-}" ]; then
			round_ratios[$pair]+="$(ratio "${round_rps[${pair%/*}]}" "${round_rps[${pair#*/}]}") "
		fi
	done
done
echo
echo "means over $rounds rounds:"
for side in $sides; do
	printf '%s: %10.0f req/s  p50 %7.2f ms  p99 %7.2f ms\n' "$side" \
		"$(awk -v s="${sum_rps[$side]}" -v n="$rounds" 'BEGIN {print s / n}')" \
		"$(awk -v s="${sum_p50[$side]}" -v n="$rounds" 'BEGIN {print s / n}')" \
		"$(awk -v s="${sum_p99[$side]}" -v n="$rounds" 'BEGIN {print s / n}')"
done
if [ -n "${sum_rps[a]:-}" ] && [ -n "${sum_rps[b]:-}" ]; then
	echo "extracts b/a: throughput $(ratio "${sum_rps[b]}" "${sum_rps[a]}"), p99 $(ratio "${sum_p99[b]}" "${sum_p99[a]}") (target >= 0.95 and <= 1.10)"
	# shellcheck disable=SC2086
	echo "  per round: ${round_ratios[b/a]}(median $(median ${round_ratios[b/a]}))"
fi
if [ -n "${sum_rps[c]:-}" ] && [ -n "${sum_rps[d]:-}" ]; then
	echo "callback d/c: throughput $(ratio "${sum_rps[d]}" "${sum_rps[c]}") (target >= 0.90)"
	# shellcheck disable=SC2086
	echo "  per round: ${round_ratios[d/c]}(median $(median ${round_ratios[d/c]}))"
fi
