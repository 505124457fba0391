package jobs

import (
	"errors"
	"fmt"
	"strings"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// ErrItemsSpec is the error of an items_spec that does not parse.
var ErrItemsSpec = errors.New("jobs: bad items_spec")

// MaxItemsSpec bounds the length of an items_spec (bytes).
const MaxItemsSpec = 4096

// ItemsSpec selects the package files a job created with POST /api/jobs
// acts on, in Quetz's syntax: specs separated by spaces, each a package
// name, where * matches any run of characters (case-insensitive), followed
// by optional version constraints joined by commas, each one of ==, >=, <=,
// > and < and a version, compared in conda's version order. A file is
// selected when any spec matches it: "*" selects every file, "numpy"
// numpy's, "my-*" those of packages named my-..., "numpy>=1.0,<2" numpy's
// 1.x files. An empty spec selects nothing.
type ItemsSpec struct {
	specs []itemSpec
}

type itemSpec struct {
	name        string
	constraints []constraint
}

type constraint struct {
	op, version string
}

// ParseItemsSpec parses an items_spec.
func ParseItemsSpec(s string) (ItemsSpec, error) {
	var out ItemsSpec
	if len(s) > MaxItemsSpec {
		return out, fmt.Errorf("%w: longer than %d bytes", ErrItemsSpec, MaxItemsSpec)
	}
	for _, word := range strings.Fields(s) {
		end := strings.IndexAny(word, "=<>!~")
		if end < 0 {
			end = len(word)
		}
		spec := itemSpec{name: word[:end]}
		if !validItemName(spec.name) {
			return ItemsSpec{}, fmt.Errorf("%w: %q is not a package name or a pattern with *", ErrItemsSpec, word)
		}
		if rest := word[end:]; rest != "" {
			for _, part := range strings.Split(rest, ",") {
				c, err := parseConstraint(part)
				if err != nil {
					return ItemsSpec{}, fmt.Errorf("%w: %q: %v", ErrItemsSpec, word, err)
				}
				spec.constraints = append(spec.constraints, c)
			}
		}
		out.specs = append(out.specs, spec)
	}
	return out, nil
}

func validItemName(n string) bool { return onlyOf(n, "-_.*") }

// onlyOf reports whether s is non-empty and made of ASCII letters, digits
// and the bytes of extra.
func onlyOf(s, extra string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(extra, r)) {
			return false
		}
	}
	return true
}

func parseConstraint(s string) (constraint, error) {
	for _, op := range []string{"==", ">=", "<=", ">", "<"} { // two-character operators first
		if v, ok := strings.CutPrefix(s, op); ok {
			if !validVersion(v) {
				return constraint{}, fmt.Errorf("bad version %q", v)
			}
			return constraint{op: op, version: v}, nil
		}
	}
	return constraint{}, fmt.Errorf("version operator of %q not implemented (==, >=, <=, >, <)", s)
}

func validVersion(v string) bool { return onlyOf(v, "._+!") }

// Match reports whether the spec selects v.
func (s ItemsSpec) Match(v *v1.PackageVersion) bool {
	for _, sp := range s.specs {
		if sp.matches(v.Package, v.Version) {
			return true
		}
	}
	return false
}

func (sp itemSpec) matches(name, version string) bool {
	if strings.Contains(sp.name, "*") {
		if !globFold(sp.name, name) {
			return false
		}
	} else if sp.name != name {
		return false
	}
	for _, c := range sp.constraints {
		cmp := conda.CompareVersions(version, c.version)
		ok := false
		switch c.op {
		case "==":
			ok = cmp == 0
		case ">=":
			ok = cmp >= 0
		case "<=":
			ok = cmp <= 0
		case ">":
			ok = cmp > 0
		case "<":
			ok = cmp < 0
		}
		if !ok {
			return false
		}
	}
	return true
}

// globFold matches name against pattern, where * is any run of characters,
// ignoring case.
func globFold(pattern, name string) bool {
	pattern, name = strings.ToLower(pattern), strings.ToLower(name)
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return len(parts) > 1 && strings.HasSuffix(name, last) || len(parts) == 1 && name == ""
}
