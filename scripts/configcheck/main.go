// Command configcheck parses the repository's shipped YAML and JSON files
// and extracts the Caddyfiles embedded in Kubernetes ConfigMaps, for
// scripts/check-configs.sh to check with caddy fmt and caddy validate.
//
//	go run ./scripts/configcheck -extract DIR FILE...
//
// Every FILE ending in .yml, .yaml or .json must parse (every document of
// a YAML stream). Each ConfigMap data key named Caddyfile, or ending in
// .Caddyfile or .caddyfile, is written to DIR, and its path printed on
// standard output, one a line. It exits 1 if a file does not parse.
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
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
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
		if err := node.Decode(&doc); err != nil || doc.Kind != "ConfigMap" {
			continue
		}
		for key, text := range doc.Data {
			if key == "Caddyfile" || strings.HasSuffix(strings.ToLower(key), ".caddyfile") {
				found[fmt.Sprintf("%s-%s", doc.Metadata.Name, key)] = text
			}
		}
	}
	return found, nil
}
