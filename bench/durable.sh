#!/usr/bin/env bash
# Benchmark of the callback route's durable mode against its synchronous
# mode, in one run so that both sides see the same machine and disk:
#   sync:    the callback route handing each callback to reverse_proxy in
#            front of the app (the synchronous mode);
#   durable: the callback route appending each callback to a spool and
#            acknowledging it once fsynced; delivery to the same app runs
#            in the background, with the default concurrency.
# The app is bench/upstream's callback sink, in its own process. Every
# request carries a distinct 17 KiB payload (a 35-document batch whose
# first document_id holds a per-request number), so that deduplication
# cannot turn them into cheap duplicates. Before each run the script waits
# for the spool's backlog to drain (polling the admin API), so that
# background deliveries do not slow the next run, and reports how long the
# durable run's backlog took to drain. After each run it counts the
# distinct callbacks the app received: at least as many as wrk saw
# acknowledged, or the benchmark fails.
# Prints callbacks/s acknowledged, p50/p99 latency, and for each connection
# count every round's durable/sync ratio and their median. The sides run
# in alternating order from round to round.
#
# Usage: bench/durable.sh [seconds per run, default 6] [connection counts, default "16 64"]
# ROUNDS (default 3); SPOOL_PARENT: a directory on the disk under test
# (default bench/.bin); FSYNC=1 also measures one writer's fsync rate.
# With PROFILE_DIR set, a CPU profile of Caddy during each run is saved
# there as cpu-c<conns>-<round>-<side>.pprof, and an execution trace of
# each durable run as trace-c<conns>-<round>.out (where requests wait:
# go tool trace -pprof=sync trace-c16-1.out > sync.pprof).
# Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-6}"
conn_list="${2:-16 64}"
rounds="${ROUNDS:-3}"
spool_parent="${SPOOL_PARENT:-$PWD/bench/.bin}"
mkdir -p "$spool_parent"
work="$(mktemp -d)"
spool_dir="$(mktemp -d "$spool_parent/durable-spool.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" "$spool_dir"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy

export ATLAS_CLIENT_ID=bench-client ATLAS_CLIENT_SECRET=bench-secret
export ATLAS_CALLBACK_CLIENT_ID=bench-atlas ATLAS_CALLBACK_CLIENT_SECRET=bench-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="bench-signing-key-0123456789-abcdefghijklmnop"
up=18191
start_upstream $up

cat >"$work/Caddyfile" <<CADDY
{
	admin localhost:12029
	auto_https off
	persist_config off
	metrics
	log {
		level ERROR
	}
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
	reverse_proxy localhost:$up
}
# durable: the callback route spooling, delivering to the same app
:18184 {
	atlas {
		callback /hooks/atlas {
			client_id      {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret  {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key    {env.ATLAS_CALLBACK_SIGNING_KEY}
			spool          $spool_dir
			deliver_to     http://localhost:$up/hooks/atlas
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

callback_payload "$up"
distinct_callbacks_lua 18183
distinct_callbacks_lua 18184
for port in 18183 18184; do
	body="$(sed -E 's/"document_id":"/"document_id":"0000000000000000-/' "$work/payload.json")"
	curl -fs -o /dev/null -H "Token: $(callback_token $port)" -H 'Content-Type: application/json' --data-binary "$body" "localhost:$port/hooks/atlas"
done

# fsync_stats prints the spool's fsync count, total fsync seconds and
# callbacks made durable, from Caddy's metrics.
fsync_stats() {
	curl -fs localhost:12029/metrics | awk '
		/^caddy_atlas_spool_fsync_seconds_count/ {n += $2}
		/^caddy_atlas_spool_fsync_seconds_sum/ {s += $2}
		/^caddy_atlas_spool_commit_batch_size_sum/ {c += $2}
		END {print n + 0, s + 0, c + 0}'
}

# spool_backlog prints the durable route's pending and in-flight callbacks.
spool_backlog() {
	curl -fs "localhost:12029/atlas/callbacks?state=pending&limit=1" |
		sed -E 's/.*"pending":([0-9]+).*"in_flight":([0-9]+).*/\1 \2/'
}
# drain: waits until the backlog is empty (at most 120 s) and prints the
# seconds it took.
drain() {
	local start now p f
	start=$(date +%s.%N)
	while :; do
		read -r p f <<<"$(spool_backlog)"
		[ "$p" -gt 0 ] || [ "$f" -gt 0 ] || break
		now=$(date +%s.%N)
		if awk -v a="$start" -v b="$now" 'BEGIN {exit !(b - a > 120)}'; then
			echo "the backlog did not drain in 120 s: $p pending, $f in flight" >&2
			exit 1
		fi
		sleep 0.05
	done
	awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}'
}

echo "caddy-atlas durable-mode benchmark: ${duration}s per run, connections $conn_list, $rounds rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "payload: $payload_size bytes, distinct per request; app: bench/upstream, out of process; spool on $(df -P "$spool_dir" | awk 'NR == 2 {print $1}') ($spool_parent)"
drain >/dev/null
declare -A ratios drains
for conns in $conn_list; do
	for round in $(seq "$rounds"); do
		order="sync durable"
		[ $((round % 2)) -eq 1 ] || order="durable sync"
		declare -A rr=()
		for side in $order; do
			drain >/dev/null
			curl -fs -o /dev/null -X POST "localhost:$up/_reset"
			profilers=()
			if [ -n "${PROFILE_DIR:-}" ]; then
				mkdir -p "$PROFILE_DIR"
				secs=$((duration > 2 ? duration - 2 : 1))
				curl -fs -o "$PROFILE_DIR/cpu-c$conns-$round-$side.pprof" \
					"localhost:12029/debug/pprof/profile?seconds=$secs" &
				profilers+=($!)
				if [ "$side" = durable ]; then
					curl -fs -o "$PROFILE_DIR/trace-c$conns-$round.out" \
						"localhost:12029/debug/pprof/trace?seconds=1" &
					profilers+=($!)
				fi
			fi
			read -r f0 fs0 fc0 <<<"$(fsync_stats)"
			case $side in
			sync) r=$(wrk_run sync "http://localhost:18183/hooks/atlas" -s "$work/post-18183.lua") ;;
			durable) r=$(wrk_run durable "http://localhost:18184/hooks/atlas" -s "$work/post-18184.lua") ;;
			esac
			read -r rps p50 p99 <<<"$r"
			[ ${#profilers[@]} -eq 0 ] || wait "${profilers[@]}"
			acked=$(awk '/requests in/ {print $1}' "$work/wrk-$side.txt")
			extra=
			if [ "$side" = durable ]; then
				read -r backlog _ <<<"$(spool_backlog)"
				read -r f1 fs1 fc1 <<<"$(fsync_stats)"
				d=$(drain)
				drains[$conns]+="$d "
				extra="$(awk -v n=$((f1 - f0)) -v s="$fs0" -v s1="$fs1" -v c="$fc0" -v c1="$fc1" -v t="$duration" 'BEGIN {
					if (n > 0) printf "  %d fsyncs/s of %.2f ms, %.1f callbacks each;", n / t, (s1 - s) * 1000 / n, (c1 - c) / n }')"
				extra+="  backlog $backlog drained in $d s"
			fi
			read -r got distinct <<<"$(sink_counts $up)"
			if [ "$distinct" -lt "$acked" ]; then
				echo "$side: wrk saw $acked callbacks acknowledged, the app received $distinct distinct ones ($got requests)" >&2
				exit 1
			fi
			printf 'c%-3d round %d %-8s %8.0f callbacks/s  p50 %7.2f ms  p99 %7.2f ms  acked %d, app got %d distinct%s\n' \
				"$conns" "$round" "$side" "$rps" "$p50" "$p99" "$acked" "$distinct" "$extra"
			rr[$side]=$rps
		done
		ratios[$conns]+="$(ratio "${rr[durable]}" "${rr[sync]}") "
	done
done
echo
for conns in $conn_list; do
	# shellcheck disable=SC2086
	printf 'durable/sync at %d connections: median %s (rounds %s); backlog drain times: %s s\n' \
		"$conns" "$(median ${ratios[$conns]})" "${ratios[$conns]% }" "${drains[$conns]% }"
done
echo "targets: >= 0.9 at 16 connections, >= 1.2 at 64; a 6 s burst at 64 drained within 10 s"
if [ -n "${FSYNC:-}" ]; then
	SPOOL_BENCH_DIR="$spool_parent" go test -run '^$' -bench 'BenchmarkFsyncSingleWriter$' -benchtime 3s ./spool/ |
		awk '/fsyncs\/s/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "fsyncs/s") print "one writer, fsync per 16 KiB write: " $i " fsyncs/s" }'
fi
