// Command k8scheck checks the Kubernetes manifests under deploy/kubernetes
// against the Kubernetes API types, for scripts/check-configs.sh, where no
// cluster (and no kubectl --dry-run=server) is at hand:
//
//	go -C scripts/k8scheck run . FILE...
//	go -C scripts/k8scheck test .   # checks deploy/kubernetes/*.yaml
//
// Every document must be an object of a kind listed below, with the
// apiVersion of that kind, and decode strictly into its k8s.io/api type
// (an unknown or misspelt field, a wrong type, is an error). Then, within
// a file: a workload's selector matches its pod template's labels; each
// container's volumeMounts name volumes of the pod; a pod's ConfigMap,
// Secret and PersistentVolumeClaim volumes name objects of the file (or
// volumeClaimTemplates), except Secrets, which are created with kubectl
// (their names are printed); each Service selects the pods of a workload
// of the file, and its named targetPorts are container ports of those
// pods; a PodDisruptionBudget selects a workload's pods. It exits 1 if a
// check fails.
//
// It is a module of its own so that k8s.io/api is no dependency of the
// plugin.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		secrets, errs := check(path)
		for _, err := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
		if len(errs) == 0 {
			fmt.Printf("%s: Secrets to create: %s\n", path, strings.Join(secrets, ", "))
		}
	}
	if failed {
		os.Exit(1)
	}
}

// kinds are the kinds a manifest may hold, by kind, with their
// apiVersion and a new value of their type.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"ConfigMap":             {"v1", func() any { return new(corev1.ConfigMap) }},
	"Secret":                {"v1", func() any { return new(corev1.Secret) }},
	"Service":               {"v1", func() any { return new(corev1.Service) }},
	"PersistentVolumeClaim": {"v1", func() any { return new(corev1.PersistentVolumeClaim) }},
	"Deployment":            {"apps/v1", func() any { return new(appsv1.Deployment) }},
	"StatefulSet":           {"apps/v1", func() any { return new(appsv1.StatefulSet) }},
	"PodDisruptionBudget":   {"policy/v1", func() any { return new(policyv1.PodDisruptionBudget) }},
}

// workload is a Deployment's or StatefulSet's pods.
type workload struct {
	name      string
	pod       *corev1.PodTemplateSpec
	templates []string // volumeClaimTemplates
}

// decode splits the file into documents and decodes each strictly.
func decode(data []byte) ([]any, []error) {
	var objs []any
	var errs []error
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 1; ; i++ {
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, []error{fmt.Errorf("document %d: %v", i, err)}
		}
		if node.Kind == 0 {
			continue
		}
		doc, err := yaml.Marshal(&node)
		if err != nil {
			return nil, []error{fmt.Errorf("document %d: %v", i, err)}
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := sigsyaml.Unmarshal(doc, &head); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %v", i, err))
			continue
		}
		k, ok := kinds[head.Kind]
		if !ok {
			errs = append(errs, fmt.Errorf("document %d: kind %q is not one k8scheck knows", i, head.Kind))
			continue
		}
		if head.APIVersion != k.apiVersion {
			errs = append(errs, fmt.Errorf("document %d (%s): apiVersion %q, want %q", i, head.Kind, head.APIVersion, k.apiVersion))
			continue
		}
		obj := k.new()
		if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %v", i, head.Kind, err))
			continue
		}
		objs = append(objs, obj)
	}
	return objs, errs
}

// check checks the manifest at path and returns the names of the Secrets
// its pods read.
func check(path string) ([]string, []error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{err}
	}
	objs, errs := decode(data)
	if len(errs) > 0 {
		return nil, errs
	}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	names := make(map[string][]string) // kind -> names in the file
	var workloads []workload
	var services []*corev1.Service
	var budgets []*policyv1.PodDisruptionBudget
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			names["ConfigMap"] = append(names["ConfigMap"], o.Name)
		case *corev1.Secret:
			names["Secret"] = append(names["Secret"], o.Name)
		case *corev1.PersistentVolumeClaim:
			names["PersistentVolumeClaim"] = append(names["PersistentVolumeClaim"], o.Name)
		case *corev1.Service:
			services = append(services, o)
		case *policyv1.PodDisruptionBudget:
			budgets = append(budgets, o)
		case *appsv1.Deployment:
			if s, err := selects(o.Spec.Selector, o.Spec.Template.Labels); err != nil || !s {
				fail("Deployment %s: its selector does not match its pod template's labels %v", o.Name, err)
			}
			workloads = append(workloads, workload{name: "Deployment " + o.Name, pod: &o.Spec.Template})
		case *appsv1.StatefulSet:
			if s, err := selects(o.Spec.Selector, o.Spec.Template.Labels); err != nil || !s {
				fail("StatefulSet %s: its selector does not match its pod template's labels %v", o.Name, err)
			}
			w := workload{name: "StatefulSet " + o.Name, pod: &o.Spec.Template}
			for _, t := range o.Spec.VolumeClaimTemplates {
				w.templates = append(w.templates, t.Name)
			}
			workloads = append(workloads, w)
		}
	}
	if len(workloads) == 0 {
		fail("no Deployment or StatefulSet")
	}
	var secrets []string
	for _, w := range workloads {
		spec := &w.pod.Spec
		volumes := slices.Clone(w.templates)
		for _, v := range spec.Volumes {
			volumes = append(volumes, v.Name)
			var refs [][2]string // kind, name
			switch {
			case v.ConfigMap != nil:
				refs = append(refs, [2]string{"ConfigMap", v.ConfigMap.Name})
			case v.Secret != nil:
				refs = append(refs, [2]string{"Secret", v.Secret.SecretName})
			case v.PersistentVolumeClaim != nil:
				refs = append(refs, [2]string{"PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName})
			case v.Projected != nil:
				for _, s := range v.Projected.Sources {
					if s.ConfigMap != nil {
						refs = append(refs, [2]string{"ConfigMap", s.ConfigMap.Name})
					}
					if s.Secret != nil {
						refs = append(refs, [2]string{"Secret", s.Secret.Name})
					}
				}
			}
			for _, r := range refs {
				switch {
				case r[1] == "":
					fail("%s: volume %s names no %s", w.name, v.Name, r[0])
				case r[0] == "Secret" && !slices.Contains(names["Secret"], r[1]):
					secrets = append(secrets, r[1]) // created with kubectl
				case r[0] != "Secret" && !slices.Contains(names[r[0]], r[1]):
					fail("%s: volume %s names %s %s, which the file does not hold", w.name, v.Name, r[0], r[1])
				}
			}
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			for _, m := range c.VolumeMounts {
				if !slices.Contains(volumes, m.Name) {
					fail("%s: container %s mounts volume %s, which the pod does not have", w.name, c.Name, m.Name)
				}
			}
		}
	}
	for _, s := range services {
		var matched []workload
		for _, w := range workloads {
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			fail("Service %s selects no pods of the file's workloads", s.Name)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.StrVal == "" {
				continue
			}
			for _, w := range matched {
				if !hasPort(w.pod, p.TargetPort.StrVal) {
					fail("Service %s: targetPort %s is no container port of %s", s.Name, p.TargetPort.StrVal, w.name)
				}
			}
		}
	}
	for _, b := range budgets {
		found := false
		for _, w := range workloads {
			if s, err := selects(b.Spec.Selector, w.pod.Labels); err == nil && s {
				found = true
			}
		}
		if !found {
			fail("PodDisruptionBudget %s selects no pods of the file's workloads", b.Name)
		}
	}
	slices.Sort(secrets)
	return slices.Compact(secrets), errs
}

// selects reports whether the label selector is set and matches set.
func selects(sel *metav1.LabelSelector, set map[string]string) (bool, error) {
	if sel == nil {
		return false, errors.New("(no selector)")
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return !s.Empty() && s.Matches(labels.Set(set)), nil
}

func hasPort(pod *corev1.PodTemplateSpec, name string) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}
