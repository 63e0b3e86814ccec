#!/usr/bin/env bash
# Soak: mixed traffic through one Caddy for a while (default 10 minutes):
# extracts pages, all=1 batches, uploads, and callbacks to a synchronous
# and to a durable (spooled) callback route, with Atlas tokens living 20s
# so that the gateway refreshes them dozens of times. Every minute it
# samples Caddy's resident memory and goroutines from its own metrics.
# At the end it reports requests served, errors by kind, authtoken calls,
# callbacks delivered from the spool, and the samples.
#
# Usage: bench/soak.sh [minutes, default 10] [connections, default 8]
# Installs wrk from Debian's packages when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-10}"
conns="${2:-8}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

. bench/lib.sh
install_wrk
go build -o "$work/caddy" ./cmd/caddy

export ATLAS_CLIENT_ID=soak-client ATLAS_CLIENT_SECRET=soak-secret
export ATLAS_CALLBACK_CLIENT_ID=soak-atlas ATLAS_CALLBACK_CLIENT_SECRET=soak-callback-secret
export ATLAS_CALLBACK_SIGNING_KEY="soak-signing-key-0123456789-abcdefghijklmnop"
mkdir -p "$work/spool"

cat >"$work/Caddyfile" <<CADDY
{
	admin localhost:13019
	auto_https off
	metrics
	log {
		level WARN
	}
}
:13081 {
	atlas_simulator {
		client_id      {env.ATLAS_CLIENT_ID}
		client_secret  {env.ATLAS_CLIENT_SECRET}
		token_lifetime 20s
	}
}
# the app: takes everything
:13090 {
	respond "ok" 200
}
:13080 {
	atlas {
		endpoint      http://localhost:13081
		client_id     {env.ATLAS_CLIENT_ID}
		client_secret {env.ATLAS_CLIENT_SECRET}
		callback /hooks/sync {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
			token_ttl     24h
		}
	}
	reverse_proxy localhost:13090
}
:13082 {
	atlas {
		callback /hooks/durable {
			client_id     {env.ATLAS_CALLBACK_CLIENT_ID}
			client_secret {env.ATLAS_CALLBACK_CLIENT_SECRET}
			signing_key   {env.ATLAS_CALLBACK_SIGNING_KEY}
			token_ttl     24h
			spool         $work/spool
			deliver_to    http://localhost:13090/hooks/durable
			retry_backoff 100ms 2s
			# Delivered ids are remembered for deduplication for
			# the retention window (7d by default), about 270 bytes each: at a
			# soak's hundreds of callbacks a second that is memory by
			# design, so the soak keeps two minutes of them.
			retention     2m
		}
	}
}
CADDY

"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
caddy_pid=$!
for _ in $(seq 100); do
	curl -fs -o /dev/null localhost:13019/config/ && break
	sleep 0.1
done
curl -fs -o /dev/null localhost:13019/config/ || { cat "$work/caddy.log" >&2; exit 1; }

# A batch of 120 documents to read, and the callback tokens.
files="$(for i in $(seq 0 119); do printf '{"file_url":"https://files.example.com/%d.pdf","document_id":"soak-%04d"},' "$i" "$i"; done)"
batch="$(curl -fs -X POST -H 'Content-Type: application/json' \
	-d "{\"product_type\":\"LOAN_APP\",\"file_urls\":[${files%,}]}" localhost:13080/atlas/multiupload |
	sed -E 's/.*"batch_id": *"([^"]+)".*/\1/')"
token() {
	curl -fs -X POST -H "Client-Id: $ATLAS_CALLBACK_CLIENT_ID" -H "Client-Secret: $ATLAS_CALLBACK_CLIENT_SECRET" "$1" |
		sed -E 's/.*"access_token": *"([^"]+)".*/\1/'
}
sync_token="$(token localhost:13080/hooks/sync/auth)"
durable_token="$(token localhost:13082/hooks/durable/auth)"
curl -fs "localhost:13080/atlas/extracts?batch_id=$batch&page=1&per_page=40" >"$work/page.json"

# The request mixes, in wrk's Lua. Callback bodies are unique (a counter
# in a document id), so the durable route stores every one. Responses are
# counted by status and by what they are (from the body: an error's
# message, or the kind of answer).
common_lua() {
	cat <<LUA
local f = io.open("$work/page.json", "rb")
local page = f:read("*a")
f:close()
local head = '{"data":[{"document_id":"cb-'
local tail = '","file_data":{"document_type":"PAN","pan_number":{"value":"ABCDE1234F","confidence_score":0.97}}},' .. string.sub(page, string.find(page, "%[") + 1)
local threads = {}
local nthreads = 0
n = 0
counts = {}
function setup(thread)
	nthreads = nthreads + 1
	thread:set("tid", nthreads)
	table.insert(threads, thread)
end
function callback(path, token)
	n = n + 1
	return wrk.format("POST", path, {["Content-Type"] = "application/json", ["Token"] = token},
		head .. tid .. "-" .. n .. tail)
end
function response(status, headers, body)
	local what = "ok"
	local err = string.match(body, '"error": *"([^"]*)"')
	if err then
		what = "error: " .. err
	elseif string.find(body, '"callback_id"', 1, true) then
		what = "accepted"
	elseif string.sub(body, 1, 1) == "[" then
		what = "upload"
	elseif string.find(body, '"total_pages":1,', 1, true) then
		what = "all"
	elseif string.find(body, '"data"', 1, true) then
		what = "page"
	end
	local key = status .. " " .. what
	counts[key] = (counts[key] or 0) + 1
end
function done(summary, latency, requests)
	local total = {}
	for _, t in ipairs(threads) do
		for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
	end
	for k, v in pairs(total) do io.write(string.format("count %s: %d\\n", k, v)) end
end
LUA
}
{
	common_lua
	cat <<LUA
local kinds = {"extracts", "extracts", "extracts", "all", "upload", "sync", "extracts"}
function request()
	n = n + 1
	local kind = kinds[(n % #kinds) + 1]
	if kind == "extracts" then
		return wrk.format("GET", "/atlas/extracts?batch_id=$batch&page=" .. ((n % 3) + 1) .. "&per_page=40")
	elseif kind == "all" then
		return wrk.format("GET", "/atlas/extracts?batch_id=$batch&all=1")
	elseif kind == "upload" then
		return wrk.format("POST", "/atlas/multiupload", {["Content-Type"] = "application/json"},
			'{"product_type":"LOAN_APP","file_urls":[{"file_url":"https://f.example.com/' .. n .. '","document_id":"up-' .. tid .. '-' .. n .. '"}]}')
	end
	return callback("/hooks/sync", "$sync_token")
end
LUA
} >"$work/mix.lua"
{
	common_lua
	cat <<LUA
function request()
	return callback("/hooks/durable", "$durable_token")
end
LUA
} >"$work/durable.lua"

echo "soak: ${minutes} min, $conns connections, token lifetime 20s"
sample() {
	local m
	m="$(curl -fs localhost:13019/metrics)"
	printf '%s rss_mib=%s goroutines=%s\n' "$1" \
		"$(awk '/^process_resident_memory_bytes / {printf "%.1f", $2 / 1048576}' <<<"$m")" \
		"$(awk '/^go_goroutines / {print $2}' <<<"$m")"
}
sample "minute 0" | tee "$work/samples"
wrk -t2 -c"$conns" -d"${minutes}m" -s "$work/mix.lua" http://localhost:13080 >"$work/mix.out" 2>&1 &
mix_pid=$!
wrk -t1 -c2 -d"${minutes}m" -s "$work/durable.lua" http://localhost:13082 >"$work/durable.out" 2>&1 &
durable_pid=$!
for m in $(seq "$minutes"); do
	sleep 60
	sample "minute $m" | tee -a "$work/samples"
done
wait "$mix_pid" "$durable_pid"
sleep 3 # let the spool deliver what it has

echo
echo "== main mix (:13080)"
grep -E "requests in|Socket errors|Non-2xx|Requests/sec" "$work/mix.out" || true
grep '^count ' "$work/mix.out" | sort || true
echo "== durable callbacks (:13082)"
grep -E "requests in|Socket errors|Non-2xx|Requests/sec" "$work/durable.out" || true
grep '^count ' "$work/durable.out" | sort || true
echo "== Atlas simulator counters"
curl -fs localhost:13081/_sim/counters
echo
echo "== spool"
for state in pending dead; do
	n="$(curl -fs "localhost:13019/atlas/callbacks?state=$state&limit=10000" | grep -o '"id":' | wc -l || true)"
	echo "$state: $n"
done
echo "== authtoken and delivery metrics"
curl -fs localhost:13019/metrics | grep -E '^caddy_atlas_(token_fetches_total|token_replays_total|delivery_attempts_total|dead_letters_total|callbacks_total)' || true
echo "== samples"
cat "$work/samples"
echo "== heap in use at the end (top 12)"
curl -fs localhost:13019/debug/pprof/heap >"$work/heap.prof"
go tool pprof -top -sample_index=inuse_space "$work/caddy" "$work/heap.prof" 2>/dev/null | sed -n '1,18p' || true
if grep -qiE '"level":"(error|panic|fatal)"' "$work/caddy.log"; then
	echo "== error log lines"
	grep -iE '"level":"(error|panic|fatal)"' "$work/caddy.log" | head -20
fi
kill "$caddy_pid"
