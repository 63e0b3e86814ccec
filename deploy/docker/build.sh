#!/usr/bin/env bash
# Builds Caddy with caddy-atlas from this checkout with xcaddy: the build
# step of deploy/docker/Dockerfile's builder stage, which CI also runs
# outside Docker (scripts/check-configs.sh) so that the recipe cannot rot.
#
#   deploy/docker/build.sh [OUTPUT]      default ./caddy
#
# Environment:
#   VERSION         the plugin version Caddy reports (list-modules
#                   --versions, build-info); default the tag at HEAD, else
#                   v0.0.0-unreleased
#   CADDY_VERSION   default the Caddy version go.mod requires
#   XCADDY_VERSION  default v0.4.5
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "${1:-caddy}")
module=github.com/caddy-atlas/caddy-atlas

caddy_version=${CADDY_VERSION:-$(cd "$src" && go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)}
version=${VERSION:-$(git -C "$src" describe --tags --exact-match 2>/dev/null || echo v0.0.0-unreleased)}

gobin=$(go env GOBIN)
gobin=${gobin:-$(go env GOPATH)/bin}
GOBIN=$gobin go install "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION:-v0.4.5}"

# module@version=dir builds from the checkout and records that version in
# the binary; a bare module=dir would ask the module proxy for the
# module's versions (see docs/operations.md, "Building Caddy with the plugin").
"$gobin/xcaddy" build "$caddy_version" --output "$out" --with "$module@$version=$src"

# The binary holds the plugin at that version.
modules=$("$out" list-modules --versions)
if ! grep -qx "http.handlers.atlas $version" <<<"$modules"; then
	echo "$out does not report http.handlers.atlas $version" >&2
	exit 1
fi
echo "built $out: Caddy $caddy_version with $module $version"
