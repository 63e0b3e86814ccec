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
# for the spool's backlog to drain (polling the admin API) and for the
# disk to take the dirty pages, so that background deliveries and
# writeback do not slow the next run, and reports how long the
# durable run's backlog took to drain. After each run it counts the
# distinct callbacks the app received: at least as many as wrk saw
# acknowledged, or the benchmark fails.
# Prints callbacks/s acknowledged, p50/p99 latency, Caddy's CPU time per
# callback (from the start of the run until its backlog has drained:
# delivery included; steadier than throughput on a shared machine), and
# for each connection
# count every round's durable/sync ratio and their median. The sides run
# in alternating order from round to round.
#
# Usage: bench/durable.sh [seconds per run, default 6] [connection counts, default "16 64"]
# ROUNDS (default 3); SPOOL_PARENT: a directory on the disk under test
# (default bench/.bin); FSYNC=1 also measures one writer's fsync rate.
# BASE_REV=<git revision> also builds the plugin at that revision and runs
# its durable route, in a second Caddy with a spool of its own, as side
# "before", so that a change is measured before and after in one run: the
# pairs durable/sync, before/sync and durable/before.
# With PROFILE_DIR set, a CPU profile of Caddy during each run is saved
# there as cpu-c<conns>-<round>-<side>.pprof, and an execution trace of
# each durable run as trace-c<conns>-<round>-<side>.out (where requests
# wait: go tool trace -pprof=sync trace-c16-1-durable.out > sync.pprof).
# Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-6}"
conn_list="${2:-16 64}"
rounds="${ROUNDS:-3}"
base_rev="${BASE_REV:-}"
spool_parent="${SPOOL_PARENT:-$PWD/bench/.bin}"
mkdir -p "$spool_parent"
work="$(mktemp -d)"
spool_dir="$(mktemp -d "$spool_parent/durable-spool.XXXXXX")"
base_spool_dir="$(mktemp -d "$spool_parent/durable-spool.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" "$spool_dir" "$base_spool_dir"' EXIT

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

start_caddy "$work/caddy" "$work/Caddyfile" 12029
caddy_pid=$!
ports="18183 18184"
if [ -n "$base_rev" ]; then
	# BASE_REV's durable route, with the same settings, on its own port.
	awk '/^# durable:/ {on = 1} on' "$work/Caddyfile" | sed -e 's/^:18184 {/:18284 {/' -e "s|spool  *$spool_dir|spool          $base_spool_dir|" >"$work/Caddyfile-base.site"
	{
		printf '{\n\tadmin localhost:12129\n\tauto_https off\n\tpersist_config off\n\tmetrics\n\tlog {\n\t\tlevel ERROR\n\t}\n}\n'
		cat "$work/Caddyfile-base.site"
	} >"$work/Caddyfile-base"
	grep -q "$base_spool_dir" "$work/Caddyfile-base" || { echo "no spool for BASE_REV's route" >&2; exit 1; }
	start_caddy "$work/caddy-base" "$work/Caddyfile-base" 12129
	base_pid=$!
	ports+=" 18284"
fi

callback_payload "$up"
for port in $ports; do
	distinct_callbacks_lua "$port"
done
for port in $ports; do
	body="$(sed -E 's/"document_id":"/"document_id":"0000000000000000-/' "$work/payload.json")"
	curl -fs -o /dev/null -H "Token: $(callback_token "$port")" -H 'Content-Type: application/json' --data-binary "$body" "localhost:$port/hooks/atlas"
done

# fsync_stats ADMIN_PORT prints the spool's fsync count, total fsync
# seconds and callbacks made durable, from that Caddy's metrics.
fsync_stats() {
	curl -fs "localhost:$1/metrics" | awk '
		/^caddy_atlas_spool_fsync_seconds_count/ {n += $2}
		/^caddy_atlas_spool_fsync_seconds_sum/ {s += $2}
		/^caddy_atlas_spool_commit_batch_size_sum/ {c += $2}
		END {print n + 0, s + 0, c + 0}'
}

echo "caddy-atlas durable-mode benchmark: ${duration}s per run, connections $conn_list, $rounds rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "payload: $payload_size bytes, distinct per request; app: bench/upstream, out of process; spool on $(df -P "$spool_dir" | awk 'NR == 2 {print $1}') ($spool_parent)"
admins="12029"
[ -z "$base_rev" ] || admins+=" 12129"
[ -z "$base_rev" ] || echo "before: the durable route at $base_rev ($(git rev-parse --short "$base_rev")), side \"before\""
# drain_all drains every Caddy's backlog, waits for its spool to settle,
# writes the page cache's dirty pages out (the spools' last run) and waits
# for the disk to be idle, so that no side pays for the compaction, the
# writeback or the discards of the side before it.
drain_all() {
	for a in $admins; do
		drain "$a" >/dev/null
		settle "$a"
	done
	sync
	disk_idle "$spool_dir"
}
sides="sync durable"
[ -z "$base_rev" ] || sides="sync durable before"
drain_all
declare -A ratios drains cpus
for conns in $conn_list; do
	for round in $(seq "$rounds"); do
		order="$sides"
		# every other round, the sides run in the reverse order
		[ $((round % 2)) -eq 1 ] || order="$(for x in $sides; do echo "$x"; done | tac | tr '\n' ' ')"
		declare -A rr=()
		for side in $order; do
			drain_all
			curl -fs -o /dev/null -X POST "localhost:$up/_reset"
			admin=12029 port=18183 pid=$caddy_pid
			case $side in
			durable) port=18184 ;;
			before) admin=12129 port=18284 pid=${base_pid:-} ;;
			esac
			cpu0=$(cpu_ticks "$pid")
			profilers=()
			if [ -n "${PROFILE_DIR:-}" ]; then
				mkdir -p "$PROFILE_DIR"
				secs=$((duration > 2 ? duration - 2 : 1))
				curl -fs -o "$PROFILE_DIR/cpu-c$conns-$round-$side.pprof" \
					"localhost:$admin/debug/pprof/profile?seconds=$secs" &
				profilers+=($!)
				if [ "$side" != sync ]; then
					curl -fs -o "$PROFILE_DIR/trace-c$conns-$round-$side.out" \
						"localhost:$admin/debug/pprof/trace?seconds=1" &
					profilers+=($!)
				fi
			fi
			read -r f0 fs0 fc0 <<<"$(fsync_stats $admin)"
			r=$(wrk_run "$side" "http://localhost:$port/hooks/atlas" -s "$work/post-$port.lua")
			read -r rps p50 p99 <<<"$r"
			[ ${#profilers[@]} -eq 0 ] || wait "${profilers[@]}"
			acked=$(awk '/requests in/ {print $1}' "$work/wrk-$side.txt")
			extra=
			if [ "$side" != sync ]; then
				read -r backlog _ <<<"$(spool_backlog $admin)"
				read -r f1 fs1 fc1 <<<"$(fsync_stats $admin)"
				d=$(drain $admin)
				drains[$conns-$side]+="$d "
				extra="$(awk -v n=$((f1 - f0)) -v s="$fs0" -v s1="$fs1" -v c="$fc0" -v c1="$fc1" -v t="$duration" 'BEGIN {
					if (n > 0) printf "  %d fsyncs/s of %.2f ms, %.1f callbacks each;", n / t, (s1 - s) * 1000 / n, (c1 - c) / n }')"
				extra+="  backlog $backlog drained in $d s"
			fi
			# Caddy's CPU time per callback, its delivery included (the
			# backlog has drained).
			cpu=$(awk -v t="$(($(cpu_ticks "$pid") - cpu0))" -v hz="$(getconf CLK_TCK)" -v n="$acked" 'BEGIN {printf "%.0f", (n > 0 ? t / hz * 1e6 / n : 0)}')
			cpus[$conns-$side]+="$cpu "
			read -r got distinct <<<"$(sink_counts $up)"
			if [ "$distinct" -lt "$acked" ]; then
				echo "$side: wrk saw $acked callbacks acknowledged, the app received $distinct distinct ones ($got requests)" >&2
				exit 1
			fi
			printf 'c%-3d round %d %-8s %8.0f callbacks/s  p50 %7.2f ms  p99 %7.2f ms  Caddy CPU %4d µs each  acked %d, app got %d distinct%s\n' \
				"$conns" "$round" "$side" "$rps" "$p50" "$p99" "$cpu" "$acked" "$distinct" "$extra"
			rr[$side]=$rps
		done
		ratios[$conns-durable/sync]+="$(ratio "${rr[durable]}" "${rr[sync]}") "
		if [ -n "$base_rev" ]; then
			ratios[$conns-before/sync]+="$(ratio "${rr[before]}" "${rr[sync]}") "
			ratios[$conns-durable/before]+="$(ratio "${rr[durable]}" "${rr[before]}") "
		fi
	done
done
echo
for conns in $conn_list; do
	for pair in durable/sync before/sync durable/before; do
		[ -n "${ratios[$conns-$pair]:-}" ] || continue
		drained=
		[ "$pair" = durable/before ] || drained="; backlog drain times: ${drains[$conns-${pair%/*}]% } s"
		# shellcheck disable=SC2086
		printf '%s at %d connections: median %s (rounds %s)%s\n' \
			"$pair" "$conns" "$(median ${ratios[$conns-$pair]})" "${ratios[$conns-$pair]% }" "$drained"
	done
	for side in $sides; do
		# shellcheck disable=SC2086
		printf 'Caddy CPU per callback at %d connections, %s: median %s µs (rounds %s)\n' \
			"$conns" "$side" "$(median ${cpus[$conns-$side]})" "${cpus[$conns-$side]% }"
	done
done
echo "targets: >= 0.9 at 16 connections, >= 1.2 at 64; a 6 s burst at 64 drained within 10 s"
if [ -n "${FSYNC:-}" ]; then
	SPOOL_BENCH_DIR="$spool_parent" go test -run '^$' -bench 'BenchmarkFsyncSingleWriter$' -benchtime 3s ./spool/ |
		awk '/fsyncs\/s/ { for (i = 1; i <= NF; i++) if ($(i + 1) == "fsyncs/s") print "one writer, fsync per 16 KiB write: " $i " fsyncs/s" }'
fi
