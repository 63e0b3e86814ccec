// Package docscheck keeps the documentation true to the code: the
// configuration reference (docs/configuration.md) complete against the
// Caddyfile parsers, the links between the pages whole, and the README
// short. It holds tests only.
package docscheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// root is the module's root, from this package's directory.
const root = "../.."

// reference is the configuration reference.
const reference = "docs/configuration.md"

// parserFunc is a function of the module that parses Caddyfile tokens,
// and the subdirective names it accepts.
type parserFunc struct {
	key   string          // "<dir> <Recv>.<Func>", as the reference's markers name it
	pos   string          // file:line, for messages
	names map[string]bool // the string cases of its switches, and the keys of the maps it indexes
}

// sourceFiles parses the module's non-test Go files, by directory
// relative to the root ("." for the root).
func sourceFiles(t *testing.T) (*token.FileSet, map[string][]*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	dirs := make(map[string][]*ast.File)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(rel)
		dirs[dir] = append(dirs[dir], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fset, dirs
}

// takesDispenser reports whether fn has a *caddyfile.Dispenser
// parameter: every parser of a Caddyfile block has.
func takesDispenser(fn *ast.FuncDecl) bool {
	for _, p := range fn.Type.Params.List {
		star, ok := p.Type.(*ast.StarExpr)
		if !ok {
			continue
		}
		sel, ok := star.X.(*ast.SelectorExpr)
		if !ok {
			continue
		}
		if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "caddyfile" && sel.Sel.Name == "Dispenser" {
			return true
		}
	}
	return false
}

// stringLit returns the value of a string literal expression.
func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// stringMaps returns the package-level map variables of files whose
// keys are string literals, by name: the sets of subdirective names
// such as callback's repeatable and queues' DeliveryDirectives.
func stringMaps(files []*ast.File) map[string][]string {
	maps := make(map[string][]string)
	for _, f := range files {
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.VAR {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, v := range vs.Values {
					lit, ok := v.(*ast.CompositeLit)
					if !ok {
						continue
					}
					if _, ok := lit.Type.(*ast.MapType); !ok {
						continue
					}
					var keys []string
					for _, elt := range lit.Elts {
						if kv, ok := elt.(*ast.KeyValueExpr); ok {
							if k, ok := stringLit(kv.Key); ok {
								keys = append(keys, k)
							}
						}
					}
					if len(keys) > 0 && i < len(vs.Names) {
						maps[vs.Names[i].Name] = keys
					}
				}
			}
		}
	}
	return maps
}

// parsers finds the module's Caddyfile parsers: the functions that take
// a *caddyfile.Dispenser and switch on string cases (the subdirective
// names) or index a package-level map of them. Those that name none (a
// block of no subdirectives, or a helper) are left out.
func parsers(t *testing.T) map[string]*parserFunc {
	fset, dirs := sourceFiles(t)
	found := make(map[string]*parserFunc)
	for dir, files := range dirs {
		maps := stringMaps(files)
		for _, f := range files {
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || fn.Body == nil || !takesDispenser(fn) {
					continue
				}
				names := make(map[string]bool)
				ast.Inspect(fn.Body, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.SwitchStmt:
						if n.Tag == nil {
							return true // switch { case cond: }: no names
						}
						for _, s := range n.Body.List {
							for _, e := range s.(*ast.CaseClause).List {
								if v, ok := stringLit(e); ok {
									names[v] = true
								}
							}
						}
					case *ast.IndexExpr:
						if id, ok := n.X.(*ast.Ident); ok {
							for _, k := range maps[id.Name] {
								names[k] = true
							}
						}
					}
					return true
				})
				if len(names) == 0 {
					continue
				}
				name := fn.Name.Name
				if fn.Recv != nil && len(fn.Recv.List) == 1 {
					recv := fn.Recv.List[0].Type
					if star, ok := recv.(*ast.StarExpr); ok {
						recv = star.X
					}
					if id, ok := recv.(*ast.Ident); ok {
						name = id.Name + "." + name
					}
				}
				key := dir + " " + name
				found[key] = &parserFunc{key: key, pos: fset.Position(fn.Pos()).String(), names: names}
			}
		}
	}
	return found
}

// section is the part of the reference that documents one parser: from
// its marker to the next.
type section struct {
	key  string
	line int
	text []string
}

var markerRE = regexp.MustCompile(`^<!-- parser: (\S+) (\S+) -->$`)

// sections splits the reference at its parser markers.
func sections(t *testing.T, lines []string) []section {
	var out []section
	for i, l := range lines {
		if m := markerRE.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			out = append(out, section{key: m[1] + " " + m[2], line: i + 1})
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].text = append(out[len(out)-1].text, l)
		}
	}
	return out
}

var backtickRE = regexp.MustCompile("`([^`]+)`")

// documented returns the names a section's subdirective tables list:
// the backticked names in the first cell of each row of a table whose
// header's first cell is "subdirective".
func documented(s section) map[string]bool {
	names := make(map[string]bool)
	inTable := false
	for _, l := range s.text {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") {
			inTable = false
			continue
		}
		cells := strings.Split(l, "|")
		first := strings.TrimSpace(cells[1])
		switch {
		case first == "subdirective":
			inTable = true
		case !inTable || strings.HasPrefix(first, "---"):
		default:
			for _, m := range backtickRE.FindAllStringSubmatch(first, -1) {
				names[m[1]] = true
			}
		}
	}
	return names
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReferenceComplete checks docs/configuration.md against the
// parsers: each parser has a section, which lists every subdirective
// the parser accepts and none that it does not.
func TestReferenceComplete(t *testing.T) {
	ps := parsers(t)
	if len(ps) == 0 {
		t.Fatal("found no Caddyfile parser in the module")
	}
	doc := strings.Split(readFile(t, reference), "\n")
	secs := sections(t, doc)
	byKey := make(map[string]section)
	for _, s := range secs {
		if _, dup := byKey[s.key]; dup {
			t.Errorf("%s:%d: a second section for the parser %s", reference, s.line, s.key)
		}
		byKey[s.key] = s
		if ps[s.key] == nil {
			t.Errorf("%s:%d: the marker names %s, which is no parser of subdirectives in the module", reference, s.line, s.key)
		}
	}
	keys := make([]string, 0, len(ps))
	for k := range ps {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := ps[k]
		s, ok := byKey[k]
		if !ok {
			t.Errorf("%s (%s) parses subdirectives, but %s has no section marked <!-- parser: %s -->", k, p.pos, reference, k)
			continue
		}
		doc := documented(s)
		t.Logf("%s: %d subdirectives: %s", k, len(p.names), strings.Join(sortedKeys(p.names), " "))
		for _, name := range sortedKeys(p.names) {
			if !doc[name] {
				t.Errorf("%s:%d: the section of %s does not document %q, which its parser accepts (%s)", reference, s.line, k, name, p.pos)
			}
		}
		for _, name := range sortedKeys(doc) {
			if !p.names[name] {
				t.Errorf("%s:%d: the section of %s documents %q, which its parser does not accept (%s)", reference, s.line, k, name, p.pos)
			}
		}
	}
}

// TestReferenceDirectives checks that every Caddyfile directive and
// global option the module registers has a heading in the reference.
func TestReferenceDirectives(t *testing.T) {
	fset, dirs := sourceFiles(t)
	headings := strings.Join(headingLines(strings.Split(readFile(t, reference), "\n")), "\n")
	n := 0
	for _, files := range dirs {
		for _, f := range files {
			ast.Inspect(f, func(node ast.Node) bool {
				call, ok := node.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				switch sel.Sel.Name {
				case "RegisterHandlerDirective", "RegisterDirective", "RegisterGlobalOption":
				default:
					return true
				}
				name, ok := stringLit(call.Args[0])
				if !ok {
					return true
				}
				n++
				if !strings.Contains(headings, "`"+name+"`") {
					t.Errorf("%s registers the directive %q, which no heading of %s names", fset.Position(call.Pos()), name, reference)
				}
				return true
			})
		}
	}
	if n == 0 {
		t.Fatal("found no directive registration in the module")
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// headingLines returns the Markdown headings of lines, outside code
// blocks.
func headingLines(lines []string) []string {
	var out []string
	fenced := false
	for _, l := range lines {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
			continue
		}
		if !fenced && strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// slug is GitHub's anchor for a heading: lower case, punctuation but
// hyphens and underscores dropped, spaces as hyphens.
func slug(heading string) string {
	h := strings.TrimSpace(strings.TrimLeft(heading, "#"))
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// pages are the README and every page of docs/.
func pages(t *testing.T) []string {
	out := []string{"README.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		out = append(out, "docs/"+filepath.Base(d))
	}
	return out
}

var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestLinks checks every relative link of the README and docs/: the file
// exists, and so does the heading an anchor names.
func TestLinks(t *testing.T) {
	anchors := make(map[string]map[string]bool)
	anchorsOf := func(page string) map[string]bool {
		if a, ok := anchors[page]; ok {
			return a
		}
		a := make(map[string]bool)
		if b, err := os.ReadFile(filepath.Join(root, page)); err == nil {
			seen := make(map[string]int)
			for _, h := range headingLines(strings.Split(string(b), "\n")) {
				s := slug(h)
				if n := seen[s]; n > 0 {
					a[s+"-"+strconv.Itoa(n)] = true
				} else {
					a[s] = true
				}
				seen[s]++
			}
		}
		anchors[page] = a
		return a
	}
	for _, page := range pages(t) {
		lines := strings.Split(readFile(t, page), "\n")
		fenced := false
		for i, l := range lines {
			if strings.HasPrefix(l, "```") {
				fenced = !fenced
			}
			if fenced {
				continue
			}
			for _, m := range linkRE.FindAllStringSubmatch(l, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, anchor, _ := strings.Cut(target, "#")
				dest := page
				if file != "" {
					dest = filepath.ToSlash(filepath.Join(filepath.Dir(page), file))
					if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
						t.Errorf("%s:%d: link to %s: no such file", page, i+1, target)
						continue
					}
				}
				if anchor != "" && strings.HasSuffix(dest, ".md") && !anchorsOf(dest)[anchor] {
					t.Errorf("%s:%d: link to %s: %s has no heading #%s", page, i+1, target, dest, anchor)
				}
			}
		}
	}
}

// TestREADMEShort keeps the README the front door: at most 300 lines.
func TestREADMEShort(t *testing.T) {
	if n := strings.Count(readFile(t, "README.md"), "\n"); n > 300 {
		t.Errorf("README.md has %d lines; at most 300 (the manual is docs/)", n)
	}
}

// TestNoPastedPlaceholders checks that no command block of the README
// and docs/ holds a batch id to be replaced by hand, such as BATCH-...:
// a command block is pasted as it is.
func TestNoPastedPlaceholders(t *testing.T) {
	for _, page := range pages(t) {
		fenced := false
		for i, l := range strings.Split(readFile(t, page), "\n") {
			if strings.HasPrefix(l, "```") {
				fenced = !fenced
				continue
			}
			if fenced && strings.Contains(l, "BATCH-...") {
				t.Errorf("%s:%d: a literal BATCH-... in a command block: capture the batch id in a variable", page, i+1)
			}
		}
	}
}
