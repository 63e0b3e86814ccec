#!/usr/bin/env bash
# Benchmark of the callback route's durable backends, in one run so that
# every side sees the same machine:
#   sync:  the callback route in front of reverse_proxy to a fast app;
#   spool: durable mode on the local spool (fsync per group commit);
#   r1:    durable mode on NATS JetStream, an R1 stream;
#   r3:    durable mode on NATS JetStream, an R3 stream (a quorum of 2 of
#          the 3 servers holds each callback before the 202).
# The three nats-servers (built from the module's nats-server dependency)
# run on this machine, as separate processes on loopback, as does the
# app (bench/upstream), which every durable side delivers to. Every
# request carries a distinct 16 KiB+ payload. Prints callbacks/s
# acknowledged and p50/p99 latency per side, and the ratios r1/spool,
# r3/spool and spool/sync (target: r3/spool >= 0.5 at 64 connections).
#
# Usage: bench/jetstream.sh [seconds per run, default 6] [connection counts, default "16 64"]
# ROUNDS (default 2). Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-6}"
conn_list="${2:-16 64}"
rounds="${ROUNDS:-2}"
mkdir -p bench/.bin
work="$(mktemp -d)"
spool_dir="$(mktemp -d "$PWD/bench/.bin/js-spool.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" "$spool_dir"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/nats-server" github.com/nats-io/nats-server/v2

export ATLAS_CLIENT_ID=bench-client ATLAS_CLIENT_SECRET=bench-secret
export ATLAS_CALLBACK_CLIENT_ID=bench-atlas ATLAS_CALLBACK_CLIENT_SECRET=bench-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="bench-signing-key-0123456789-abcdefghijklmnop"
up=18191
start_upstream $up

# Three nats-servers in a cluster, default sync_interval.
routes="nats://127.0.0.1:16231,nats://127.0.0.1:16232,nats://127.0.0.1:16233"
for i in 1 2 3; do
	mkdir -p "$work/nats-$i"
	cat >"$work/nats-$i.conf" <<NATS
server_name: bench-$i
listen: 127.0.0.1:1422$i
max_payload: 8MB
jetstream { store_dir: "$work/nats-$i" }
cluster { name: bench, listen: 127.0.0.1:1623$i, routes: [$routes] }
NATS
	"$work/nats-server" -c "$work/nats-$i.conf" >"$work/nats-$i.log" 2>&1 &
done
nats="nats://127.0.0.1:14221 nats://127.0.0.1:14222 nats://127.0.0.1:14223"

route() {
	cat <<ROUTE
	atlas {
		callback /hooks/atlas {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
			max_body      4MiB
			$1
		}
	}
ROUTE
}
cat >"$work/Caddyfile" <<CADDY
{
	admin localhost:12029
	auto_https off
	persist_config off
	log {
		level ERROR
	}
}
:18183 {
$(route "")
	reverse_proxy localhost:$up
}
:18184 {
$(route "spool $spool_dir
			deliver_to http://localhost:$up/hooks/atlas
			max_spool_size 32GiB")
}
:18185 {
$(route "deliver_to http://localhost:$up/hooks/atlas
			queue jetstream {
				url $nats
				stream BENCH_R1
				replicas 1
			}")
}
:18186 {
$(route "deliver_to http://localhost:$up/hooks/atlas
			queue jetstream {
				url $nats
				stream BENCH_R3
				replicas 3
			}")
}
CADDY

# Caddy creates the streams at start, so it needs the cluster up: retry.
for _ in $(seq 5); do
	HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" \
		"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
	for _ in $(seq 100); do
		curl -fs -o /dev/null localhost:12029/config/ && break 2
		kill -0 $! 2>/dev/null || break
		sleep 0.1
	done
	sleep 1
done
curl -fs -o /dev/null localhost:12029/config/ || { cat "$work/caddy.log" "$work"/nats-*.log >&2; exit 1; }

callback_payload "$up"
declare -A port=([sync]=18183 [spool]=18184 [r1]=18185 [r3]=18186)
declare -A queue=([spool]="$spool_dir" [r1]=jetstream:BENCH_R1 [r3]=jetstream:BENCH_R3)
for side in sync spool r1 r3; do distinct_callbacks_lua "${port[$side]}"; done

# backlog SIDE prints the pending callbacks of a durable side.
backlog() {
	curl -fsG "localhost:12029/atlas/callbacks" --data-urlencode "spool=${queue[$1]}" --data-urlencode state=pending \
		--data-urlencode limit=1 | sed -E 's/.*"pending":([0-9]+).*/\1/'
}
# drain SIDE waits until its backlog is empty (at most 180 s).
drain() {
	local start=$SECONDS
	while [ "$(backlog "$1")" -gt 0 ]; do
		if [ $((SECONDS - start)) -gt 180 ]; then
			echo "$1: the backlog did not drain in 180 s" >&2
			exit 1
		fi
		sleep 0.1
	done
}

echo "caddy-atlas durable backends: ${duration}s per run, connections $conn_list, $rounds rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "payload: $payload_size bytes, distinct per request; 3 nats-servers $("$work/nats-server" --version), default sync_interval; app: bench/upstream"
declare -A r1s r3s spools
for conns in $conn_list; do
	for round in $(seq "$rounds"); do
		order="sync spool r1 r3"
		[ $((round % 2)) -eq 1 ] || order="r3 r1 spool sync"
		declare -A rr=()
		for side in $order; do
			for s in spool r1 r3; do drain $s; done
			curl -fs -o /dev/null -X POST "localhost:$up/_reset"
			r=$(wrk_run "$side" "http://localhost:${port[$side]}/hooks/atlas" -s "$work/post-${port[$side]}.lua")
			read -r rps p50 p99 <<<"$r"
			acked=$(awk '/requests in/ {print $1}' "$work/wrk-$side.txt")
			[ "$side" = sync ] || drain "$side"
			read -r got distinct <<<"$(sink_counts $up)"
			if [ "$distinct" -lt "$acked" ]; then
				echo "$side: wrk saw $acked callbacks acknowledged, the app received $distinct distinct ones ($got requests)" >&2
				exit 1
			fi
			printf 'c%-3d round %d %-6s %8.0f callbacks/s  p50 %7.2f ms  p99 %7.2f ms  acked %d, app got %d distinct\n' \
				"$conns" "$round" "$side" "$rps" "$p50" "$p99" "$acked" "$distinct"
			rr[$side]=$rps
		done
		spools[$conns]+="$(ratio "${rr[spool]}" "${rr[sync]}") "
		r1s[$conns]+="$(ratio "${rr[r1]}" "${rr[spool]}") "
		r3s[$conns]+="$(ratio "${rr[r3]}" "${rr[spool]}") "
	done
done
echo
for conns in $conn_list; do
	# shellcheck disable=SC2086
	printf 'at %d connections: r3/spool median %s (rounds %s), r1/spool %s (%s), spool/sync %s (%s)\n' "$conns" \
		"$(median ${r3s[$conns]})" "${r3s[$conns]% }" "$(median ${r1s[$conns]})" "${r1s[$conns]% }" \
		"$(median ${spools[$conns]})" "${spools[$conns]% }"
done
