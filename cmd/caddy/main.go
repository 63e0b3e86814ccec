// Command caddy is Caddy with its standard modules, the caddy-atlas
// plugin, and the Atlas simulator and the demo's stand-in app modules (for
// tests and demos), so that `go run ./cmd/caddy` works without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-atlas/caddy-atlas"
	_ "github.com/caddy-atlas/caddy-atlas/demoapp"
	_ "github.com/caddy-atlas/caddy-atlas/simulator"
)

func main() {
	caddycmd.Main()
}
