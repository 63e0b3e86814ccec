#!/usr/bin/env bash
# Runs every test of caddy-atlas: `go test -race -count=1 ./...` (with
# this script's arguments before ./...), through gotestsum, which prints
# go test's usual lines, then the tests skipped with their reasons, then
# its DONE line; the exit status is non-zero if anything failed.
#
# What it needs, it installs, or says in one line what is missing:
#   - gotestsum, pinned (go install through the module proxy, like
#     staticcheck in .ci/run); without it, plain go test, no list of
#     the skipped tests;
#   - the interop tests' (JOSE, Standard Webhooks) Node.js packages,
#     pinned by scripts/interop/package-lock.json (npm ci); without node
#     and npm, or the npm registry, those tests skip, and say so.
set -euo pipefail
cd "$(dirname "$0")/.."

gotestsum_version=v1.13.0

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "test.sh: node or npm not found: the interop tests (JOSE, Standard Webhooks) will be skipped; to run them, install Node.js 20 or later with npm (https://nodejs.org/en/download, or apt-get install nodejs npm where that is 20 or later)"
elif ! out=$(npm ci --prefix scripts/interop --no-audit --no-fund --loglevel=error 2>&1); then
	echo "test.sh: npm ci --prefix scripts/interop failed, the interop tests (JOSE, Standard Webhooks) will be skipped: $(tail -n 1 <<<"$out")"
fi

bin=$(go env GOBIN)
gotestsum=${bin:-$(go env GOPATH)/bin}/gotestsum
if [[ $("$gotestsum" --version 2>/dev/null) != *" $gotestsum_version" ]] &&
	! out=$(go install "gotest.tools/gotestsum@$gotestsum_version" 2>&1); then
	echo "test.sh: go install gotest.tools/gotestsum@$gotestsum_version failed, running go test without the list of skipped tests: $(tail -n 1 <<<"$out")"
	exec go test -race -count=1 "$@" ./...
fi
exec "$gotestsum" --format standard-quiet -- -race -count=1 "$@" ./...
