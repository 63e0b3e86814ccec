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

	// A workload beside the ConfigMap must set what its Caddyfile reads.
	workload := `apiVersion: v1
kind: ConfigMap
metadata:
  name: gw
data:
  Caddyfile: |
    {$HOST} {
    	bind {$BIND:127.0.0.1}
    	respond "{env.GREETING} {file.{$DIR}/name}"
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gw
spec:
  template:
    spec:
      containers:
        - name: caddy
          env:
            - name: HOST
              value: example.com
            - name: DIR
              value: /run/secrets
`
	if _, err := check(write("env-ok.yaml", strings.Replace(workload, "            - name: DIR\n", "            - name: GREETING\n              value: hi\n            - name: DIR\n", 1))); err != nil {
		t.Errorf("every variable set: %v", err)
	}
	_, err = check(write("env-missing.yaml", workload))
	if err == nil || !strings.Contains(err.Error(), "gw-Caddyfile reads GREETING") || strings.Contains(err.Error(), "BIND") {
		t.Errorf("GREETING not set: %v, want it named (and not BIND, which has a default)", err)
	}

	dup := strings.Replace(workload, "            - name: DIR\n", "              value: twice\n            - name: DIR\n", 1)
	if _, err = check(write("env-dup.yaml", dup)); err == nil || !strings.Contains(err.Error(), "document 2 (Deployment)") {
		t.Errorf("a Deployment with a duplicate key: %v, want an error naming it", err)
	}

	if _, err := check(write("ok.json", `{"panels": []}`)); err != nil {
		t.Errorf("ok.json: %v", err)
	}
}
