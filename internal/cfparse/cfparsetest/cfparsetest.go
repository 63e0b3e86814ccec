// Package cfparsetest checks that the list of a Caddyfile block's
// subdirectives, which suggests the nearest name for a misspelt one, is
// the list of names its parser's switch accepts.
package cfparsetest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"testing"
)

// Cases returns the string constants of the case clauses of the
// switches in the function fn (a method as "Type.Method") of the Go
// file path, sorted.
func Cases(t *testing.T, path, fn string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	found := false
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || funcName(fd) != fn {
			continue
		}
		found = true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			cc, ok := n.(*ast.CaseClause)
			if !ok {
				return true
			}
			for _, e := range cc.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, s)
				}
			}
			return true
		})
	}
	if !found {
		t.Fatalf("%s: no function %s", path, fn)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Check fails t unless names, the block's list, holds exactly the cases
// of fn's switches in the file path and the extra names it handles
// before them.
func Check(t *testing.T, path, fn string, names []string, extra ...string) {
	t.Helper()
	want := append(Cases(t, path, fn), extra...)
	slices.Sort(want)
	want = slices.Compact(want)
	got := slices.Clone(names)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("the subdirectives of %s in %s are %q, the list says %q", fn, path, want, got)
	}
}

// funcName names a function declaration: "Type.Method" for a method.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	typ := fd.Recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}
