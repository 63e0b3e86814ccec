package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Every manifest under deploy/kubernetes passes (scripts/check-configs.sh
// runs this test), and each kind of mistake planted in one is found.
func TestCheck(t *testing.T) {
	shipped, err := filepath.Glob(filepath.Join("..", "..", "deploy", "kubernetes", "*.y*ml"))
	if err != nil || len(shipped) < 2 {
		t.Fatalf("the manifests: %v %v", shipped, err)
	}
	for _, path := range shipped {
		secrets, errs := check(path)
		if len(errs) > 0 || len(secrets) == 0 {
			t.Errorf("%s: %v, Secrets %v", path, errs, secrets)
		}
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "caddy-atlas-jetstream.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, c := range []struct{ old, new, want string }{
		{"  topologySpreadConstraints:", "  topologySpreadConstraint:", `document 6 (Deployment): error unmarshaling JSON: while decoding JSON: json: unknown field "topologySpreadConstraint"`},
		{"      storage: 1Gi", "      storage: lots", "document 2 (PersistentVolumeClaim)"},
		{"apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n", `apiVersion "policy/v1beta1", want "policy/v1"`},
		{"kind: PodDisruptionBudget", "kind: PodDisruptionBudgets", `kind "PodDisruptionBudgets"`},
		{"      targetPort: gateway", "      targetPort: gatewy", "Service caddy-atlas-jetstream: targetPort gatewy is no container port"},
		{"            - name: tmp\n              mountPath: /tmp", "            - name: temp\n              mountPath: /tmp", "mounts volume temp, which the pod does not have"},
		{"            claimName: caddy-atlas-jetstream-storage", "            claimName: caddy-atlas-storage", "names PersistentVolumeClaim caddy-atlas-storage, which the file does not hold"},
		{"            name: caddy-atlas-jetstream\n        # Both", "            name: caddy-atlas\n        # Both", "names ConfigMap caddy-atlas, which the file does not hold"},
		{"  selector:\n    app.kubernetes.io/name: caddy-atlas-jetstream\n  ports:\n    - name: gateway", "  selector:\n    app.kubernetes.io/name: caddy-atlas\n  ports:\n    - name: gateway", "Service caddy-atlas-jetstream selects no pods"},
		{"  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: caddy-atlas-jetstream", "  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: nats", "PodDisruptionBudget caddy-atlas-jetstream selects no pods"},
		{"  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: caddy-atlas-jetstream", "  template:\n    metadata:\n      labels:\n        app.kubernetes.io/name: caddy-atlas-js", "Deployment caddy-atlas-jetstream: its selector does not match"},
	} {
		if strings.Count(string(src), c.old) != 1 {
			t.Fatalf("case %d: %q is not once in the manifest", i, c.old)
		}
		path := filepath.Join(dir, fmt.Sprintf("case%d.yaml", i))
		if err := os.WriteFile(path, []byte(strings.Replace(string(src), c.old, c.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, errs := check(path)
		if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), c.want) }) {
			t.Errorf("case %d (%s): %v, want an error with %q", i, c.new, errs, c.want)
		}
	}
}
