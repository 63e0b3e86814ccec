// Command configcheck parses the repository's shipped YAML and JSON files
// and extracts the Caddyfiles embedded in Kubernetes ConfigMaps, for
// scripts/check-configs.sh to check with caddy fmt and caddy validate.
//
//	go run ./scripts/configcheck -extract DIR FILE...
//
// Every FILE ending in .yml, .yaml or .json must parse (every document of
// a YAML stream). Each ConfigMap data key named Caddyfile, or ending in
// .Caddyfile or .caddyfile, is written to DIR, and its path printed on
// standard output, one a line. In a file that also holds workloads
// (Deployment, StatefulSet, DaemonSet), every environment variable such
// a Caddyfile reads without a default ({env.NAME}, {$NAME}) must be set
// in the env of one of their containers: a variable the manifest forgets
// to set would fail only in the cluster. It exits 1 if a file does not
// parse or fails that check.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

func main() {
	extract := flag.String("extract", "", "directory for the embedded Caddyfiles")
	flag.Parse()
	if *extract == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: configcheck -extract DIR FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range flag.Args() {
		caddyfiles, err := check(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		for name, text := range caddyfiles {
			out := filepath.Join(*extract, strings.NewReplacer("/", "_", " ", "_").Replace(path+"--"+name))
			if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			fmt.Println(out)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// check parses the file at path and returns the Caddyfiles embedded in
// its ConfigMaps, by document index and key.
func check(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case strings.HasSuffix(path, ".json"):
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		return nil, nil
	case strings.HasSuffix(path, ".yml"), strings.HasSuffix(path, ".yaml"):
	default:
		return nil, errors.New("neither YAML nor JSON")
	}
	found := make(map[string]string)
	set := make(map[string]bool) // env names the workloads' containers set
	workloads := false
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
			Spec     struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct{ Name string } `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		// Decode into a node first so that any YAML, not only objects of
		// this shape, is checked for syntax.
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %v", i+1, err)
		}
		if node.Kind == 0 {
			continue // an empty document
		}
		var kind struct {
			Kind string `yaml:"kind"`
		}
		if node.Decode(&kind) != nil {
			continue // not an object, or one with no kind
		}
		switch kind.Kind {
		case "Deployment", "StatefulSet", "DaemonSet", "ConfigMap":
			// Of the kinds checked here: its shape must be right.
			if err := node.Decode(&doc); err != nil {
				return nil, fmt.Errorf("document %d (%s): %v", i+1, kind.Kind, err)
			}
		}
		switch doc.Kind {
		case "Deployment", "StatefulSet", "DaemonSet":
			workloads = true
			for _, c := range doc.Spec.Template.Spec.Containers {
				for _, e := range c.Env {
					set[e.Name] = true
				}
			}
		case "ConfigMap":
			for key, text := range doc.Data {
				if key == "Caddyfile" || strings.HasSuffix(strings.ToLower(key), ".caddyfile") {
					found[fmt.Sprintf("%s-%s", doc.Metadata.Name, key)] = text
				}
			}
		}
	}
	if !workloads {
		return found, nil
	}
	var missing []string
	for name, text := range found {
		for _, m := range envRead.FindAllStringSubmatch(text, -1) {
			if v := m[1] + m[2]; !set[v] {
				missing = append(missing, fmt.Sprintf("%s reads %s", name, v))
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		missing = slices.Compact(missing)
		return nil, fmt.Errorf("set in no container's env: %s", strings.Join(missing, ", "))
	}
	return found, nil
}

// envRead matches an environment variable a Caddyfile reads without a
// default: {env.NAME} at load time, {$NAME} when adapted ({$NAME:default}
// has one).
var envRead = regexp.MustCompile(`\{env\.([A-Za-z_][A-Za-z0-9_]*)\}|\{\$([A-Za-z_][A-Za-z0-9_]*)\}`)
