#!/usr/bin/env bash
# Runs every test of caddy-atlas: the JOSE interop tool's dependencies
# (pinned by package-lock.json), then `go test -race` over all packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f scripts/interop/package-lock.json ]; then
	npm ci --prefix scripts/interop --no-audit --no-fund --loglevel=error
fi
go test -race -count=1 "$@" ./...
