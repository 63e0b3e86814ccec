#!/usr/bin/env bash
# Benchmark of what the ledger of batches costs the upload and callback
# routes: two Caddy processes built from this repo, alike but for the
# global options' `batches`, each with an upload route and a durable
# callback route (a spool of its own, fsync before 202), in front of
# bench/upstream (the fast stand-in for Atlas and for the app, in its own
# process):
#   plain:  no ledger;
#   ledger: every upload recorded in the ledger (bbolt beside the spool)
#           before its answer goes back, every callback's documents
#           looked up and claimed in their batch before the 202.
# Each upload is a distinct batch of 35 documents; each callback is a
# distinct 35-document payload (17 KiB) whose documents are those of one
# batch the ledger side uploaded before the run (a preload, not timed),
# so that every callback the ledger side takes is matched and claimed,
# never the cheaper path of a document the ledger does not know, nor a
# duplicate. The sides run in alternating order from round to round.
# After each run the benchmark counts what was done and fails if
# anything is missing: the uploads Atlas (the upstream) accepted, the
# batches the ledger recorded, the distinct callbacks the app received
# (after the backlog has drained), the batches the callbacks completed,
# and no unmatched document.
# Prints uploads/s and callbacks/s, p50/p99 latency and Caddy's CPU time
# per request for each run, and per route the median of the rounds'
# ledger/plain ratios (target: at least 0.9).
#
# Usage: bench/batches.sh [seconds per run, default 5] [connections, default 16]
# ROUNDS (default 5); KINDS (default "upload callback"): the routes to
# measure; SPOOL_PARENT: a directory on the disk under test
# (default bench/.bin). With PROFILE_DIR set, a CPU profile of each
# ledger run is saved there. Installs wrk from Debian's packages when it
# is missing.
set -euo pipefail
shopt -s inherit_errexit # a failure in $(...) ends the script too
cd "$(dirname "$0")/.."

duration="${1:-5}"
conns="${2:-16}"
rounds="${ROUNDS:-5}"
kinds="${KINDS:-upload callback}"
spool_parent="${SPOOL_PARENT:-$PWD/bench/.bin}"
mkdir -p "$spool_parent"
work="$(mktemp -d)"
plain_dir="$(mktemp -d "$spool_parent/batches-plain.XXXXXX")"
ledger_dir="$(mktemp -d "$spool_parent/batches-ledger.XXXXXX")"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work" "$plain_dir" "$ledger_dir"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy

export ATLAS_CLIENT_ID=bench-client ATLAS_CLIENT_SECRET=bench-secret
export ATLAS_CALLBACK_CLIENT_ID=bench-atlas ATLAS_CALLBACK_CLIENT_SECRET=bench-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="bench-signing-key-0123456789-abcdefghijklmnop"
up=18391
start_upstream $up

# caddyfile ADMIN PORT SPOOL [BATCHES] writes a Caddyfile: the account and
# the spool in the global options (with BATCHES, the ledger too), and a
# site with the upload route and the durable callback route.
caddyfile() {
	cat <<CADDY
{
	admin localhost:$1
	auto_https off
	persist_config off
	metrics
	log {
		level ERROR
	}
	atlas {
		endpoint http://localhost:$up
		client_id {env.ATLAS_CLIENT_ID}
		client_secret {env.ATLAS_CLIENT_SECRET}
		queue spool $3 {
			max_spool_size 32GiB
		}
$4
	}
}
:$2 {
	atlas {
		upload_path /atlas/multiupload
		callback /hooks/atlas {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
			deliver_to    http://localhost:$up/hooks/atlas
		}
	}
}
CADDY
}
# No poll during the benchmark: the results come by callback.
caddyfile 12329 18381 "$plain_dir" "" >"$work/Caddyfile-plain"
caddyfile 12330 18382 "$ledger_dir" "		batches {
			poll_after 24h
			poll_every 24h
		}" >"$work/Caddyfile-ledger"
start_caddy "$work/caddy" "$work/Caddyfile-plain" 12329
plain_pid=$!
start_caddy "$work/caddy" "$work/Caddyfile-ledger" 12330
ledger_pid=$!
declare -A admin=([plain]=12329 [ledger]=12330) port=([plain]=18381 [ledger]=18382) pid=([plain]=$plain_pid [ledger]=$ledger_pid)

callback_payload "$up"
# The wrk scripts. Request k (1, 2, ...) of thread t (1 or 2: wrk_run
# runs two threads) has the sequence number $START + 2(k-1) + t; done()
# prints the next free START. An upload's documents and a callback's are
# "<prefix><seq>-" and the 35 document ids of payload.json: the callback
# of sequence number s carries the results of the upload of s.
# lua_common writes what both wrk scripts share: the payload's text
# (tmpl), START and PREFIX, the threads, the request counter n, and a
# done() that prints the next free START and, for the uploads, the
# sequence numbers known to be uploaded: those below UPLOADED_BELOW (the
# requests a thread had in flight when wrk stopped, one per connection,
# may not have been).
lua_common() {
	cat <<LUA
local f = io.open("$work/payload.json", "rb")
local tmpl = f:read("*a")
f:close()
local start = tonumber(os.getenv("START") or "0")
local prefix = os.getenv("PREFIX") or "x"
local threads = {}
function setup(thread)
	threads[#threads + 1] = thread
	thread:set("tid", #threads)
end
n = 0
function done()
	local k, low = 0, math.huge
	for _, t in ipairs(threads) do
		k = math.max(k, t:get("n"))
		low = math.min(low, t:get("n"))
	end
	print("NEXT_START " .. (start + 2 * k))
	local inflight = math.ceil(tonumber(os.getenv("CONNS") or "0") / #threads)
	print("UPLOADED_BELOW " .. (start + 2 * math.max(0, low - inflight)))
end
LUA
}
for port in "${port[@]}"; do
	{
		lua_common
		cat <<'LUA'
local docs = {}
for id in tmpl:gmatch('"document_id":"([^"]+)"') do docs[#docs + 1] = id end
local headers = {["Content-Type"] = "application/json"}
function request()
	n = n + 1
	local seq = start + 2 * (n - 1) + tid
	local files = {}
	for i, id in ipairs(docs) do
		files[i] = string.format('{"file_url":"https://files.example/%s%d/%d.pdf","document_id":"%s%d-%s"}', prefix, seq, i, prefix, seq, id)
	end
	return wrk.format("POST", "/atlas/multiupload", headers, '{"product_type":"LOAN_APP","file_urls":[' .. table.concat(files, ",") .. ']}')
end
LUA
	} >"$work/upload-$port.lua"
	{
		lua_common
		cat <<LUA
local headers = {["Content-Type"] = "application/json", ["Token"] = "$(callback_token "$port")"}
function request()
	n = n + 1
	local seq = start + 2 * (n - 1) + tid
	local body = tmpl:gsub('"document_id":"', '"document_id":"' .. prefix .. seq .. '-')
	return wrk.format("POST", "/hooks/atlas", headers, body)
end
LUA
	} >"$work/callback-$port.lua"
done

# metric ADMIN NAME_AND_LABELS prints a metric's value (0 if absent).
metric() {
	curl -fs "localhost:$1/metrics" | awk -v m="$2" '$1 == m {v = $2} END {printf "%.0f", v + 0}'
}
processing() { metric "${admin[ledger]}" 'caddy_atlas_batches{state="processing"}'; }
complete() { metric "${admin[ledger]}" 'caddy_atlas_batches{state="complete"}'; }
unmatched() { metric "${admin[ledger]}" caddy_atlas_batch_unmatched_documents_total; }
# uploads prints the upstream's counts: "uploads distinct_documents".
uploads() { curl -fs "localhost:$up/_counts" | sed -E 's/.*"uploaded_documents":([0-9]+).*"uploads":([0-9]+).*/\2 \1/'; }

drain_all() {
	for side in plain ledger; do
		drain "${admin[$side]}" >/dev/null
		settle "${admin[$side]}"
	done
	sync
	disk_idle "$spool_parent"
}

# One warm-up request of each kind on each side (its token, connections).
for side in plain ledger; do
	START=1000000000 PREFIX=w wrk -t1 -c1 -d1s -s "$work/upload-${port[$side]}.lua" "http://localhost:${port[$side]}" >/dev/null
	START=1000000000 PREFIX=w wrk -t1 -c1 -d1s -s "$work/callback-${port[$side]}.lua" "http://localhost:${port[$side]}" >/dev/null
done
drain_all

echo "caddy-atlas ledger-of-batches benchmark: ${duration}s per run, $conns connections, $rounds rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "uploads: 35 documents each, a new batch each; callbacks: $payload_size bytes, 35 documents of one uploaded batch each; upstream and app: bench/upstream, out of process; spools on $(df -P "$ledger_dir" | awk 'NR == 2 {print $1}') ($spool_parent)"

declare -A next=([upload]=0 [callback]=0) ratios cpus
# run SIDE KIND PREFIX: one timed run; prints "rps p50 p99 acked cpu_us"
# (the caller advances next[KIND]).
run() {
	local side=$1 kind=$2 prefix=$3 cpu0 r acked
	cpu0=$(cpu_ticks "${pid[$side]}")
	if [ -n "${PROFILE_DIR:-}" ] && [ "$side" = ledger ]; then
		mkdir -p "$PROFILE_DIR"
		curl -fs -o "$PROFILE_DIR/cpu-$kind-$round.pprof" \
			"localhost:${admin[$side]}/debug/pprof/profile?seconds=$((duration > 2 ? duration - 2 : 1))" &
	fi
	r=$(START=${next[$kind]} PREFIX=$prefix CONNS=$conns wrk_run "$side-$kind" "http://localhost:${port[$side]}" -s "$work/$kind-${port[$side]}.lua")
	wait || echo "the CPU profile of $side $kind failed" >&2 # run runs in a subshell: its own jobs only
	acked=$(awk '/requests in/ {print $1}' "$work/wrk-$side-$kind.txt")
	[ "$kind" = upload ] || drain "${admin[$side]}" >/dev/null
	echo "$r $acked $(awk -v t="$(($(cpu_ticks "${pid[$side]}") - cpu0))" -v hz="$(getconf CLK_TCK)" -v n="$acked" 'BEGIN {printf "%.0f", (n > 0 ? t / hz * 1e6 / n : 0)}')"
}
next_start() { awk '$1 == "NEXT_START" {print $2}' "$work/wrk-$1.txt"; }
fail() {
	echo "$*" >&2
	exit 1
}

for round in $(seq "$rounds"); do
	order="plain ledger"
	[ $((round % 2)) -eq 1 ] || order="ledger plain"
	# The preload, not timed: the batches this round's callbacks on the
	# ledger side complete, uploaded through the ledger side for
	# PRELOAD_FACTOR (default 5) times a run's duration on 64 connections,
	# from the callbacks' next sequence number on.
	if [[ " $kinds " == *" callback "* ]]; then
		saved="$duration $conns"
		duration=$((duration * ${PRELOAD_FACTOR:-5})) conns=64
		START=${next[callback]} PREFIX=c CONNS=$conns wrk_run preload "http://localhost:${port[ledger]}" -s "$work/upload-${port[ledger]}.lua" >/dev/null
		read -r duration conns <<<"$saved"
		preloaded=$(awk '$1 == "UPLOADED_BELOW" {print $2}' "$work/wrk-preload.txt")
	fi
	drain_all
	for kind in $kinds; do
		declare -A rr=()
		for side in $order; do
			curl -fs -o /dev/null -X POST "localhost:$up/_reset"
			p0=$(processing) c0=$(complete) m0=$(unmatched)
			prefix=u
			[ "$kind" = upload ] || prefix=c
			# Each side's uploads have sequence numbers of their own (the
			# two ledgers are apart anyway); the callbacks of both sides
			# use the preloaded ones, which the plain side does not know.
			out=$(run "$side" "$kind" "$prefix")
			read -r rps p50 p99 acked cpu <<<"$out"
			next[$kind]=$(next_start "$side-$kind")
			check=
			if [ "$kind" = upload ]; then
				read -r got docs <<<"$(uploads)"
				[ "$got" -ge "$acked" ] || fail "$side: wrk saw $acked uploads answered, the upstream accepted $got"
				[ "$docs" -ge $((35 * acked)) ] || fail "$side: $acked uploads answered, the upstream saw $docs distinct documents"
				check="upstream accepted $got ($docs distinct documents)"
				if [ "$side" = ledger ]; then
					rec=$(($(processing) - p0))
					[ "$rec" -ge "$acked" ] || fail "ledger: $acked uploads answered, $rec batches recorded"
					check+=", ledger recorded $rec"
				fi
			else
				read -r _ distinct <<<"$(sink_counts "$up")"
				[ "$distinct" -ge "$acked" ] || fail "$side: wrk saw $acked callbacks acknowledged, the app received $distinct distinct ones"
				check="app got $distinct distinct"
				if [ "$side" = ledger ]; then
					[ "${next[callback]}" -le "$preloaded" ] || fail "ledger: the callbacks went past the preloaded batches (${next[callback]} > $preloaded): lengthen the preload"
					done=$(($(complete) - c0)) um=$(($(unmatched) - m0))
					[ "$um" -eq 0 ] || fail "ledger: $um documents unmatched"
					[ "$done" -ge "$acked" ] || fail "ledger: $acked callbacks acknowledged, $done batches completed"
					check+=", batches completed $done, unmatched $um"
				fi
			fi
			printf 'round %d %-8s %-6s %7.0f /s  p50 %6.2f ms  p99 %6.2f ms  Caddy CPU %5d µs each  acked %d, %s\n' \
				"$round" "$kind" "$side" "$rps" "$p50" "$p99" "$cpu" "$acked" "$check"
			rr[$side]=$rps
			cpus[$kind-$side]+="$cpu "
			drain_all
		done
		ratios[$kind]+="$(ratio "${rr[ledger]}" "${rr[plain]}") "
	done
done
echo
for kind in $kinds; do
	# shellcheck disable=SC2086
	printf '%s route, ledger/plain at %d connections: median %s (rounds %s); Caddy CPU per request: plain %s µs, ledger %s µs (medians)\n' \
		"$kind" "$conns" "$(median ${ratios[$kind]})" "${ratios[$kind]% }" "$(median ${cpus[$kind-plain]})" "$(median ${cpus[$kind-ledger]})"
done
echo "target: >= 0.9 on both"
