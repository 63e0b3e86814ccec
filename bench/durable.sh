#!/usr/bin/env bash
# Benchmark of the callback route's durable mode against its synchronous
# mode, in one run so that both sides see the same machine and disk:
#   sync:    the callback route handing each callback to reverse_proxy in
#            front of a fast app (the synchronous mode);
#   durable: the callback route appending each callback to a spool and
#            acknowledging it once fsynced (delivery to the same app runs
#            in the background);
#   fsync:   one writer appending 16 KiB and fsyncing per request, on the
#            spool's disk (spool's BenchmarkFsyncSingleWriter): the rate a
#            one-fsync-per-request design would reach.
# Every request carries a distinct 16 KiB payload, so that none is a
# duplicate. Prints callbacks/s acknowledged and p50/p99 latency, and the
# ratios durable/sync (target >= 0.8) and durable/fsync (target >= 2).
#
# Usage: bench/durable.sh [seconds per run, default 10] [connections, default 64]
# SPOOL_PARENT: a directory on the disk under test (default bench/.bin).
# Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-10}"
conns="${2:-64}"
rounds="${ROUNDS:-2}"
spool_parent="${SPOOL_PARENT:-$PWD/bench/.bin}"
mkdir -p "$spool_parent"
work="$(mktemp -d)"
spool_dir="$(mktemp -d "$spool_parent/durable-spool.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" "$spool_dir"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy

export ATLAS_CALLBACK_CLIENT_ID=bench-atlas ATLAS_CALLBACK_CLIENT_SECRET=bench-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="bench-signing-key-0123456789-abcdefghijklmnop"

cat >"$work/Caddyfile" <<CADDY
{
	admin localhost:12029
	auto_https off
	persist_config off
	log {
		level ERROR
	}
}
# a fast app
:18190 {
	respond "ok" 200
}
# sync: the callback route in front of reverse_proxy
:18183 {
	atlas {
		callback /hooks/atlas {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
		}
	}
	reverse_proxy localhost:18190
}
# durable: the callback route spooling, delivering to the same app
:18184 {
	atlas {
		callback /hooks/atlas {
			client_id      {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret  {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key    {env.ATLAS_CALLBACK_SIGNING_KEY}
			spool          $spool_dir
			deliver_to     http://localhost:18190/hooks/atlas
			max_spool_size 32GiB
		}
	}
}
CADDY

HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" \
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
for _ in $(seq 100); do
	curl -fs -o /dev/null localhost:12029/config/ && break
	sleep 0.1
done
curl -fs -o /dev/null localhost:12029/config/ || { cat "$work/caddy.log" >&2; exit 1; }

token() {
	curl -fs -X POST -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H "Client-Secret: $ATLAS_CALLBACK_CLIENT_SECRET" \
		"localhost:$1/hooks/atlas/auth" | sed -E 's/.*"access_token": *"([^"]+)".*/\1/'
}

# A 16 KiB extraction payload whose first document_id holds NONCE, a
# 16-character slot that the Lua script fills with a per-request number.
{
	printf '{"data":[{"document_id":"NONCE","file_data":{"document_type":"PAN"}}'
	i=0
	while :; do
		doc="$(printf ',{"document_id":"doc-%04d","file_data":{"document_type":"PAN","pan_number":{"value":"ABCDE1234F","confidence_score":0.98},"name_as_per_pan":{"value":"RAVI KUMAR","confidence_score":0.9}}}' "$i")"
		printf '%s' "$doc"
		i=$((i + 1))
		[ $((i * ${#doc})) -lt 16000 ] || break
	done
	printf '],"page":1,"per_page":50,"total_pages":1,"has_next":false,"has_prev":false}'
} >"$work/payload.tmpl"
payload_size=$(($(wc -c <"$work/payload.tmpl") - 5 + 16))

# post.lua PORT: distinct bodies, one counter per wrk thread.
lua() {
	cat >"$work/post-$1.lua" <<LUA
local f = io.open("$work/payload.tmpl", "rb")
local tmpl = f:read("*a")
f:close()
local headers = {["Content-Type"] = "application/json", ["Token"] = "$(token "$1")"}
local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("tid", threads)
end
local n = 0
function request()
	n = n + 1
	local body = tmpl:gsub("NONCE", string.format("%02d%06d%08d", tid, math.random(0, 999999), n), 1)
	return wrk.format("POST", "/hooks/atlas", headers, body)
end
LUA
}
lua 18183
lua 18184

# run NAME PORT: the callback route on PORT, with that port's payloads.
run() {
	wrk_run "$1" "http://localhost:$2/hooks/atlas" -s "$work/post-$2.lua"
}

# The fsync rate of the spool's disk, one writer, 16 KiB per fsync.
fsync_rate() {
	SPOOL_BENCH_DIR="$spool_parent" go test -run '^$' -bench 'BenchmarkFsyncSingleWriter$' -benchtime 3s ./spool/ |
		awk '/fsyncs\/s/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "fsyncs/s") print $i }'
}

echo "caddy-atlas durable-mode benchmark: ${duration}s per run, $conns connections, $rounds rounds, $(nproc) cores"
echo "payload: $payload_size bytes, distinct per request; spool on $(df -P "$spool_dir" | awk 'NR == 2 {print $1}') ($spool_parent)"
declare -A sum_rps sum_p50 sum_p99
sum_fsync=0
for round in $(seq "$rounds"); do
	for side in sync durable; do
		case $side in
		sync) r=$(run sync 18183) ;;
		durable) r=$(run durable 18184) ;;
		esac
		read -r rps p50 p99 <<<"$r"
		printf 'round %d %-8s %10.0f callbacks/s  p50 %7.2f ms  p99 %7.2f ms\n' "$round" "$side" "$rps" "$p50" "$p99"
		sum_rps[$side]=$(awk -v a="${sum_rps[$side]:-0}" -v b="$rps" 'BEGIN {print a + b}')
		sum_p50[$side]=$(awk -v a="${sum_p50[$side]:-0}" -v b="$p50" 'BEGIN {print a + b}')
		sum_p99[$side]=$(awk -v a="${sum_p99[$side]:-0}" -v b="$p99" 'BEGIN {print a + b}')
	done
	f="$(fsync_rate)"
	printf 'round %d %-8s %10.0f fsyncs/s (one writer, 16 KiB each)\n' "$round" fsync "$f"
	sum_fsync=$(awk -v a="$sum_fsync" -v b="$f" 'BEGIN {print a + b}')
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mean() { awk -v s="$1" -v n="$rounds" 'BEGIN {printf "%.0f", s / n}'; }
echo
echo "means over $rounds rounds:"
for side in sync durable; do
	printf '%-8s %10s callbacks/s  p50 %7.2f ms  p99 %7.2f ms\n' "$side" "$(mean "${sum_rps[$side]}")" \
		"$(awk -v s="${sum_p50[$side]}" -v n="$rounds" 'BEGIN {print s / n}')" \
		"$(awk -v s="${sum_p99[$side]}" -v n="$rounds" 'BEGIN {print s / n}')"
done
printf '%-8s %10s fsyncs/s\n' fsync "$(mean "$sum_fsync")"
stats="$(curl -fs "localhost:12029/atlas/callbacks?limit=1" | sed -E 's/.*"spools":\[\{([^]]*)\}\].*/\1/')"
echo "spool after the runs: $stats"
echo "durable/sync:  $(ratio "${sum_rps[durable]}" "${sum_rps[sync]}") (target >= 0.8)"
echo "durable/fsync: $(ratio "${sum_rps[durable]}" "$sum_fsync") (target >= 2)"
