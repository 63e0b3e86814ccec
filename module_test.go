package caddyatlas

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-atlas/caddy-atlas/callback"
)

// TestProvisionOutboundErrors: a misconfigured outbound route fails at
// provision time with a message that names the setting, never the secret.
func TestProvisionOutboundErrors(t *testing.T) {
	t.Setenv("PROVISION_TEST_SECRET", "provision-secret-do-not-echo")
	t.Setenv("PROVISION_TEST_EMPTY", "")
	for _, tc := range []struct {
		name string
		h    Handler
		want string
	}{
		{"no endpoint", Handler{ClientID: "id", ClientSecret: "{env.PROVISION_TEST_SECRET}"}, "endpoint is required"},
		{"relative endpoint", Handler{Endpoint: "atlas.example.com", ClientID: "id", ClientSecret: "x"}, "not an absolute http(s) URL"},
		{"no credentials", Handler{Endpoint: "https://atlas.example.com"}, "client_id and client_secret are empty"},
		{"empty secret from env", Handler{Endpoint: "https://atlas.example.com", ClientID: "gw", ClientSecret: "{env.PROVISION_TEST_EMPTY}"}, `client_secret {env.PROVISION_TEST_EMPTY} is empty: PROVISION_TEST_EMPTY is set but empty (client_id "gw")`},
		{"unset secret env", Handler{Endpoint: "https://atlas.example.com", ClientID: "gw", ClientSecret: "{env.ATLAS_CLIENT_SECRET_UNSET_TEST}"}, "client_secret {env.ATLAS_CLIENT_SECRET_UNSET_TEST} is empty: ATLAS_CLIENT_SECRET_UNSET_TEST is not set"},
		{"missing secret file", Handler{Endpoint: "https://atlas.example.com", ClientID: "gw", ClientSecret: "{file./nonexistent/atlas-secret}"}, "client_secret {file./nonexistent/atlas-secret} is empty: the file /nonexistent/atlas-secret does not exist"},
		{"unset id env", Handler{Endpoint: "https://atlas.example.com", ClientID: "{env.PROVISION_TEST_EMPTY}", ClientSecret: "{env.PROVISION_TEST_SECRET}"}, "client_id {env.PROVISION_TEST_EMPTY} is empty: PROVISION_TEST_EMPTY is set but empty"},
		{"unset endpoint env", Handler{Endpoint: "{env.ATLAS_ENDPOINT_UNSET_TEST}", ClientID: "id", ClientSecret: "{env.PROVISION_TEST_SECRET}"}, "endpoint {env.ATLAS_ENDPOINT_UNSET_TEST} is empty: ATLAS_ENDPOINT_UNSET_TEST is not set"},
		{"empty id", Handler{Endpoint: "https://atlas.example.com", ClientSecret: "{env.PROVISION_TEST_SECRET}"}, "client_id is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			h := tc.h
			err := h.Provision(ctx)
			if err == nil {
				_ = h.Cleanup()
				t.Fatalf("provisioned; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "provision-secret-do-not-echo") {
				t.Errorf("the error echoes the secret: %v", err)
			}
			if err := h.Cleanup(); err != nil {
				t.Errorf("cleanup after a failed provision: %v", err)
			}
		})
	}
}

// TestValidate checks the handler's own validation.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    Handler
		want string
	}{
		{"relative path", Handler{extractsPath: "atlas/extracts"}, "must start with /"},
		{"same paths", Handler{extractsPath: "/a", uploadPath: "/a"}, "are the same path"},
		{"bad token header", Handler{extractsPath: "/a", TokenHeader: "To ken"}, "not a valid header name"},
		{"every route off", Handler{}, "every route is off"},
		{"bad token storage", Handler{extractsPath: "/a", TokenStorage: "local"}, `token_storage must be empty (Caddy's storage) or "off"`},
		{"clash with callback", Handler{extractsPath: "/hooks", Callback: &callback.Callback{Path: "/hooks", AuthPath: "/hooks/auth"}}, "used by both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.h.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
