// Package placeholder explains a setting whose {env.NAME} and
// {file.path} placeholders resolved to nothing: which variable is unset
// or empty, which file is missing, unreadable or empty. Caddy's replacer
// resolves such a placeholder to the empty string and says no more; the
// setting's error then names its placeholder and the cause, never the
// value of a secret.
package placeholder

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Empty returns the error of a setting, configured as raw, that resolved
// to an empty (or blank) value, e.g.
//
//	client_secret {env.ATLAS_CLIENT_SECRET} is empty: ATLAS_CLIENT_SECRET is not set
//	signing_key {file./run/secrets/key} is empty: the file /run/secrets/key does not exist
//
// A raw value without a placeholder is not echoed (it may be a secret
// written inline): the error is "<setting> is empty".
func Empty(setting, raw string) error {
	refs := refs(raw)
	if len(refs) == 0 {
		return fmt.Errorf("%s is empty", setting)
	}
	var why []string
	for _, ref := range refs {
		if w := explain(ref); w != "" {
			why = append(why, w)
		}
	}
	if len(why) == 0 {
		return fmt.Errorf("%s %s is empty", setting, strings.Join(placed(refs), " "))
	}
	return fmt.Errorf("%s %s is empty: %s", setting, strings.Join(placed(refs), " "), strings.Join(why, "; "))
}

// Blank reports whether a resolved value is empty or only white space.
func Blank(v string) bool { return strings.TrimSpace(v) == "" }

// refs returns the env. and file. placeholders of raw, without their
// braces, in order.
func refs(raw string) []string {
	var out []string
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '\\':
			i++ // an escaped character
		case '{':
			end := strings.IndexByte(raw[i+1:], '}')
			if end < 0 {
				return out
			}
			key := raw[i+1 : i+1+end]
			if strings.HasPrefix(key, "env.") || strings.HasPrefix(key, "file.") {
				out = append(out, key)
			}
			i += end + 1
		}
	}
	return out
}

// placed returns refs with their braces.
func placed(refs []string) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = "{" + r + "}"
	}
	return out
}

// explain says why the placeholder ref resolves to nothing, "" if it
// does not.
func explain(ref string) string {
	if name, ok := strings.CutPrefix(ref, "env."); ok {
		v, set := os.LookupEnv(name)
		switch {
		case !set:
			return name + " is not set"
		case Blank(v):
			return name + " is set but empty"
		}
		return ""
	}
	path, _ := strings.CutPrefix(ref, "file.")
	where := path
	if !filepath.IsAbs(path) {
		wd, _ := os.Getwd()
		where = fmt.Sprintf("%s (relative to the working directory %s)", path, wd)
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "the file " + where + " does not exist"
	case errors.Is(err, fs.ErrPermission):
		return "the file " + where + " cannot be read: permission denied"
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Sprintf("the file %s cannot be read: %v", where, err)
	case Blank(string(b)):
		return "the file " + where + " is empty"
	}
	return ""
}
