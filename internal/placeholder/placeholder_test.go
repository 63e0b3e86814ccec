package placeholder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEmpty(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(dir, "full")
	if err := os.WriteFile(full, []byte("s3cret-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLACEHOLDER_TEST_EMPTY", "")
	t.Setenv("PLACEHOLDER_TEST_SET", "s3cret-value")
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		setting, raw, want string
	}{
		{"client_secret", "{env.PLACEHOLDER_TEST_UNSET}", "client_secret {env.PLACEHOLDER_TEST_UNSET} is empty: PLACEHOLDER_TEST_UNSET is not set"},
		{"client_secret", "{env.PLACEHOLDER_TEST_EMPTY}", "client_secret {env.PLACEHOLDER_TEST_EMPTY} is empty: PLACEHOLDER_TEST_EMPTY is set but empty"},
		{"signing_key", "{file." + missing + "}", "signing_key {file." + missing + "} is empty: the file " + missing + " does not exist"},
		{"signing_key", "{file." + empty + "}", "signing_key {file." + empty + "} is empty: the file " + empty + " is empty"},
		{"signing_key", "{file." + dir + "}", "signing_key {file." + dir + "} is empty: the file " + dir + " cannot be read: is a directory"},
		{"signing_key", "{file.relative/key}", "signing_key {file.relative/key} is empty: the file relative/key (relative to the working directory "},
		{"key", "{env.PLACEHOLDER_TEST_UNSET}{file." + missing + "}", "key {env.PLACEHOLDER_TEST_UNSET} {file." + missing + "} is empty: PLACEHOLDER_TEST_UNSET is not set; the file " + missing + " does not exist"},
		{"key", "{env.PLACEHOLDER_TEST_SET}{env.PLACEHOLDER_TEST_UNSET}", "key {env.PLACEHOLDER_TEST_SET} {env.PLACEHOLDER_TEST_UNSET} is empty: PLACEHOLDER_TEST_UNSET is not set"},
		{"key", "{file." + full + "}", "key {file." + full + "} is empty"},
		{"key", "  ", "key is empty"},
		{"key", `\{env.X}`, "key is empty"},
		{"key", "{http.request.host}", "key is empty"},
	}
	for _, tt := range tests {
		got := Empty(tt.setting, tt.raw).Error()
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("Empty(%q, %q) = %q, want %q", tt.setting, tt.raw, got, tt.want)
		}
		if strings.Contains(got, "s3cret-value") {
			t.Errorf("Empty(%q, %q) = %q shows the secret", tt.setting, tt.raw, got)
		}
	}
}
