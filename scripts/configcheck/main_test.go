package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("k8s.yaml", `# two documents and an empty one
apiVersion: v1
kind: ConfigMap
metadata:
  name: gw
data:
  Caddyfile: |
    :80 {
    	respond "hi"
    }
  site.caddyfile: ":81"
  other: not a caddyfile
---
---
apiVersion: v1
kind: Service
metadata:
  name: gw
data:
  Caddyfile: "not in a ConfigMap"
`)
	got, err := check(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["gw-Caddyfile"] != ":80 {\n\trespond \"hi\"\n}\n" || got["gw-site.caddyfile"] != ":81" {
		t.Errorf("embedded Caddyfiles: %q", got)
	}

	for name, text := range map[string]string{
		"bad.yml":   "a: 1\n---\nb: [unclosed\n",
		"bad.json":  `{"a": }`,
		"tabs.yaml": "a:\n\t- b\n",
		"x.txt":     "",
	} {
		if _, err := check(write(name, text)); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "bad.yml" && !strings.Contains(err.Error(), "document 2") {
			t.Errorf("%s: %v, want the document named", name, err)
		}
	}
	if _, err := check(write("ok.json", `{"panels": []}`)); err != nil {
		t.Errorf("ok.json: %v", err)
	}
}
