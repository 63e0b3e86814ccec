package e2e

import (
	"strings"
	"testing"
)

// TestCLIListWithoutDurableRoute runs `caddy atlas callbacks list` against
// a Caddy whose callback route is synchronous: it says so, rather than
// printing an empty table.
func TestCLIListWithoutDurableRoute(t *testing.T) {
	skipShort(t)
	t.Setenv("CLI_E2E_CLIENT_SECRET", "cli-e2e-callback-secret")
	t.Setenv("CLI_E2E_SIGNING_KEY", "cli-e2e-signing-key-of-at-least-32-bytes")
	tester := newTester(t)
	tester.InitServer(caddyfile("\tgrace_period 1ns\n", `	route {
		atlas {
			callback /hooks/atlas {
				client_id atlas-cli-e2e
				client_secret {env.CLI_E2E_CLIENT_SECRET}
				signing_key {env.CLI_E2E_SIGNING_KEY}
			}
		}
		respond "app" 200
	}
`), "caddyfile")

	out, err := runAtlasCLI(t, "callbacks", "list", "--address", adminAddr)
	if err != nil || !strings.HasPrefix(out, "no durable callback route is configured") || strings.Contains(out, "ID") {
		t.Errorf("list: %v\n%s", err, out)
	}
	// --json still prints the admin API's answer as it is.
	if out, err := runAtlasCLI(t, "callbacks", "list", "--json", "--address", adminAddr); err != nil || !strings.Contains(out, `"spools":[]`) {
		t.Errorf("list --json: %v\n%s", err, out)
	}
}
