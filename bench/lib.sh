# Shared by the load scripts in bench/: source it, with $work (a scratch
# directory), $duration (seconds per run) and $conns (connections) set.

# install_wrk installs wrk from Debian's packages when it is missing.
install_wrk() {
	if ! command -v wrk >/dev/null; then
		echo "installing wrk" >&2
		(apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
	fi
}

# wrk_run NAME URL [wrk args...]: runs wrk and prints "rps p50_ms p99_ms";
# any non-2xx answer fails the benchmark.
wrk_run() {
	local name="$1" url="$2"
	shift 2
	local out
	out="$(wrk -t2 -c"$conns" -d"${duration}s" --latency "$@" "$url")"
	echo "$out" >"$work/wrk-$name.txt"
	if grep -q "Non-2xx" <<<"$out"; then
		echo "$name: non-2xx responses:" >&2
		echo "$out" >&2
		exit 1
	fi
	local rps p50 p99
	rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
	p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
	p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
	echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}

# to_ms converts a wrk latency (e.g. 850.12us, 3.20ms, 1.02s) to ms.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
		else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
		else print v }'
}

# ratio A B prints A / B.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

# median of the numbers given.
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# start_upstream PORT: builds bench/upstream (the fast stand-in for Atlas
# and for the app) and runs it on localhost:PORT, in its own process, with
# the credentials in $ATLAS_CLIENT_ID and $ATLAS_CLIENT_SECRET.
start_upstream() {
	go build -o "$work/upstream" ./bench/upstream
	"$work/upstream" -listen "127.0.0.1:$1" -client-id "$ATLAS_CLIENT_ID" -client-secret "$ATLAS_CLIENT_SECRET" \
		>"$work/upstream.log" 2>&1 &
	for _ in $(seq 100); do
		curl -fs -o /dev/null "localhost:$1/_counts" && return 0
		sleep 0.1
	done
	cat "$work/upstream.log" >&2
	exit 1
}

# upstream_token PORT prints a token from the upstream's authtoken.
upstream_token() {
	curl -fs -X POST -H "Client-Id: $ATLAS_CLIENT_ID" -H "Client-Secret: $ATLAS_CLIENT_SECRET" \
		"localhost:$1/v1/docstream/authtoken" | sed -E 's/.*"access_token": *"([^"]+)".*/\1/'
}

# sink_counts PORT prints the callback sink's counts as "requests distinct_ids".
sink_counts() {
	curl -fs "localhost:$1/_counts" | sed -E 's/.*"distinct_ids":([0-9]+).*"requests":([0-9]+).*/\2 \1/'
}

# callback_token PORT prints a token from the auth_url of the callback
# route on PORT.
callback_token() {
	curl -fs -X POST -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H "Client-Secret: $ATLAS_CALLBACK_CLIENT_SECRET" \
		"localhost:$1/hooks/atlas/auth" | sed -E 's/.*"access_token": *"([^"]+)".*/\1/'
}

# callback_payload UPSTREAM_PORT writes $work/payload.json, a whole
# 35-document batch from the upstream's generator, and exits if the
# callbacks made from it would be under 16 KiB.
callback_payload() {
	curl -fs "localhost:$1/_payload?docs=35" >"$work/payload.json"
	payload_size=$(($(wc -c <"$work/payload.json") + 17))
	if [ "$payload_size" -lt 16384 ]; then
		echo "the callback payload is $payload_size bytes, less than 16 KiB" >&2
		exit 1
	fi
}

# distinct_callbacks_lua PORT writes $work/post-PORT.lua, a wrk script
# posting distinct callbacks to the route on PORT with its token: the
# first document_id of $work/payload.json gets a prefix of 16 digits
# (thread, random, counter) and a dash; the payload stays valid.
distinct_callbacks_lua() {
	cat >"$work/post-$1.lua" <<LUA
local f = io.open("$work/payload.json", "rb")
local tmpl = f:read("*a")
f:close()
local headers = {["Content-Type"] = "application/json", ["Token"] = "$(callback_token "$1")"}
local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("tid", threads)
end
local n = 0
function init()
	math.randomseed(os.time() + tid * 7919)
end
function request()
	n = n + 1
	local body = tmpl:gsub('"document_id":"', string.format('"document_id":"%02d%06d%08d-', tid, math.random(0, 999999), n), 1)
	return wrk.format("POST", "/hooks/atlas", headers, body)
end
LUA
}

# start_caddy BINARY CADDYFILE ADMIN_PORT starts a Caddy and waits for its
# admin API.
start_caddy() {
	HOME="$work" XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" \
		"$1" run --config "$2" --adapter caddyfile >"$2.log" 2>&1 &
	for _ in $(seq 100); do
		curl -fs -o /dev/null "localhost:$3/config/" && return
		sleep 0.1
	done
	cat "$2.log" >&2
	exit 1
}

# spool_backlog ADMIN_PORT prints the durable route's pending and in-flight
# callbacks.
spool_backlog() {
	curl -fs "localhost:$1/atlas/callbacks?state=pending&limit=1" |
		sed -E 's/.*"pending":([0-9]+).*"in_flight":([0-9]+).*/\1 \2/'
}
# drain ADMIN_PORT: waits until that Caddy's backlog is empty (at most
# 120 s) and prints the seconds it took.
drain() {
	local start now p f
	start=$(date +%s.%N)
	while :; do
		read -r p f <<<"$(spool_backlog "$1")"
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

# cpu_ticks PID prints the CPU time, user and system, that the process has
# used, in clock ticks.
cpu_ticks() {
	awk '{print $14 + $15}' "/proc/$1/stat"
}

# settle ADMIN_PORT: waits (at most 60 s) until that Caddy's spool has
# stopped changing size on disk: a compaction that follows a run (the
# delivered bodies are garbage) rewrites what is live and deletes the old
# segments, disk work that would otherwise fall on the next side.
settle() {
	local last="" now same=0
	for _ in $(seq 200); do
		now="$(curl -fs "localhost:$1/atlas/callbacks?limit=1" | sed -E 's/.*"disk_bytes":([0-9]+).*"segments":([0-9]+).*/\1 \2/')"
		if [ "$now" = "$last" ]; then
			same=$((same + 1))
			[ "$same" -lt 3 ] || return 0
		else
			same=0
		fi
		last=$now
		sleep 0.3
	done
}

# disk_idle DIR: waits (at most 30 s) until the disk of DIR has been idle
# for half a second: the discards of deleted segments (a filesystem
# mounted with -o discard issues them after the delete) and the writeback
# go on after the files are gone.
disk_idle() {
	local disk_stat
	disk_stat="/sys/class/block/$(basename "$(df -P "$1" | awk 'NR == 2 {print $1}')")/stat"
	[ -r "$disk_stat" ] || return 0
	local t0 t1
	for _ in $(seq 60); do
		t0=$(awk '{print $10}' "$disk_stat")
		sleep 0.5
		t1=$(awk '{print $10}' "$disk_stat")
		[ $((t1 - t0)) -ge 10 ] || return 0
	done
}
