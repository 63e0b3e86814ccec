package atlasclient

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseAPIError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   APIError
		text   string
	}{
		{"error", 400, `{"error": "batch_id is required"}`,
			APIError{400, "batch_id is required", ""}, "atlas: 400: batch_id is required"},
		{"error_code and error_message", 401, `{"error_code": "401", "error_message": "Invalid or expired token"}`,
			APIError{401, "Invalid or expired token", "401"}, "atlas: 401: Invalid or expired token"},
		{"numeric error_code", 401, `{"error_code": 401, "error_message": "Unauthorized"}`,
			APIError{401, "Unauthorized", "401"}, "atlas: 401: Unauthorized"},
		{"message", 422, `{"message": "callback auth_url unreachable", "code": "AUTH_URL"}`,
			APIError{422, "callback auth_url unreachable", "AUTH_URL"}, "atlas: 422 AUTH_URL: callback auth_url unreachable"},
		{"nested", 500, `{"error": {"code": "E1", "message": "boom"}}`,
			APIError{500, "boom", "E1"}, "atlas: 500 E1: boom"},
		{"plain text", 401, "Invalid or expired token\n",
			APIError{401, "Invalid or expired token", ""}, "atlas: 401: Invalid or expired token"},
		{"empty", 400, "",
			APIError{400, "Bad Request", ""}, "atlas: 400: Bad Request"},
		{"whitespace", 503, " \n",
			APIError{503, "Service Unavailable", ""}, "atlas: 503: Service Unavailable"},
		{"json without message", 502, `{"status": "down"}`,
			APIError{502, "Bad Gateway", ""}, "atlas: 502: Bad Gateway"},
		{"broken json", 400, `{"error": `,
			APIError{400, `{"error":`, ""}, `atlas: 400: {"error":`},
		{"unknown status, empty", 599, "",
			APIError{599, "status 599", ""}, "atlas: 599: status 599"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseAPIError(tt.status, []byte(tt.body))
			if *got != tt.want {
				t.Errorf("ParseAPIError = %+v, want %+v", *got, tt.want)
			}
			if got.Error() != tt.text {
				t.Errorf("Error() = %q, want %q", got.Error(), tt.text)
			}
		})
	}

	long := ParseAPIError(500, []byte(strings.Repeat("é", 1000)))
	if len(long.Message) > maxErrorMessage+len("…") || !strings.HasSuffix(long.Message, "…") {
		t.Errorf("long body gave a %d-byte message", len(long.Message))
	}
}

func TestAPIErrorSentinels(t *testing.T) {
	tests := []struct {
		err          error
		unauthorized bool
		batchID      bool
	}{
		{ParseAPIError(401, []byte(`{"error": "Invalid or expired token"}`)), true, false},
		{ParseAPIError(401, nil), true, false},
		{ParseAPIError(400, []byte(`{"error": "batch_id is required"}`)), false, true},
		{ParseAPIError(400, []byte(`Batch_ID is required.`)), false, true},
		{ParseAPIError(400, []byte(`{"error": "product_type is required"}`)), false, false},
		{ParseAPIError(404, []byte(`batch_id is required`)), false, false},
		{fmt.Errorf("listing: %w", ParseAPIError(401, nil)), true, false},
		{&CredentialsError{ClientID: "x", StatusCode: 401}, false, false},
	}
	for _, tt := range tests {
		if got := errors.Is(tt.err, ErrUnauthorized); got != tt.unauthorized {
			t.Errorf("errors.Is(%v, ErrUnauthorized) = %v", tt.err, got)
		}
		if got := errors.Is(tt.err, ErrBatchIDRequired); got != tt.batchID {
			t.Errorf("errors.Is(%v, ErrBatchIDRequired) = %v", tt.err, got)
		}
	}
}
