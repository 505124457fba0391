package conda

import (
	"strings"
)

// versionAtom is one run of digits or non-digits in a version component.
type versionAtom struct {
	kind atomKind
	s    string // digits without leading zeros for atomNum; text for atomStr
}

type atomKind uint8

// Atom kinds in ascending order of precedence between kinds: any string
// sorts before any number, and "post" sorts after every number.
const (
	atomStr atomKind = iota
	atomNum
	atomPost
)

// zeroAtom is the fill value for missing atoms and components.
var zeroAtom = versionAtom{kind: atomNum, s: ""}

// parsedVersion is a version split into epoch+release components and local
// components, each a list of atoms.
type parsedVersion struct {
	release [][]versionAtom
	local   [][]versionAtom
}

// CompareVersions compares two conda version strings following conda's
// VersionOrder rules and returns -1, 0 or +1.
//
// The version is lowercased; an optional "N!" prefix is the epoch (default
// 0) and an optional "+local" suffix is compared after the rest. Both parts
// are split into components on '.', '_' and '-', and each component into
// runs of digits and non-digits. Digit runs compare numerically (of any
// length); text runs compare lexically; any text run sorts before any
// number, except "post", which sorts after every number, and "dev", which
// sorts before every other text. A component starting with text gets an
// implicit leading 0, and missing components and atoms count as 0, so
// 1.0 == 1.0.0, 1.0a < 1.0 < 1.0.post1, 1.0.dev1 < 1.0a and 1.9 < 1.10.
// Strings conda would reject still compare deterministically.
func CompareVersions(a, b string) int {
	if a == b {
		return 0
	}
	va, vb := parseVersion(a), parseVersion(b)
	if c := compareComponents(va.release, vb.release); c != 0 {
		return c
	}
	return compareComponents(va.local, vb.local)
}

func parseVersion(v string) parsedVersion {
	v = strings.ToLower(strings.TrimSpace(v))
	epoch := "0"
	if i := strings.IndexByte(v, '!'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
	}
	var local string
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v, local = v[:i], v[i+1:]
	}
	var p parsedVersion
	p.release = append(p.release, splitAtoms(epoch))
	p.release = append(p.release, splitComponents(v)...)
	if local != "" {
		p.local = splitComponents(local)
	}
	return p
}

// splitComponents splits a version on '.', '_' and '-'. A trailing
// underscore is kept as a text atom, as conda does for openssl-like
// versions (1.1dev1 < 1.1_ < 1.1a1 < 1.1).
func splitComponents(v string) [][]versionAtom {
	var out [][]versionAtom
	trailing := strings.HasSuffix(v, "_")
	parts := strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '_' || r == '-' })
	for _, part := range parts {
		out = append(out, splitAtoms(part))
	}
	if trailing && len(out) > 0 {
		out[len(out)-1] = append(out[len(out)-1], versionAtom{kind: atomStr, s: "_"})
	}
	return out
}

// splitAtoms splits a component into digit and non-digit runs. A
// component that starts with text gets a leading 0 atom.
func splitAtoms(c string) []versionAtom {
	var atoms []versionAtom
	for i := 0; i < len(c); {
		j := i
		digit := isDigit(c[i])
		for j < len(c) && isDigit(c[j]) == digit {
			j++
		}
		run := c[i:j]
		switch {
		case digit:
			atoms = append(atoms, versionAtom{kind: atomNum, s: strings.TrimLeft(run, "0")})
		case run == "post":
			atoms = append(atoms, versionAtom{kind: atomPost})
		case run == "dev":
			// conda maps dev to "DEV", which sorts before lowercase text.
			atoms = append(atoms, versionAtom{kind: atomStr, s: "DEV"})
		default:
			atoms = append(atoms, versionAtom{kind: atomStr, s: run})
		}
		i = j
	}
	if len(atoms) > 0 && atoms[0].kind != atomNum {
		atoms = append([]versionAtom{zeroAtom}, atoms...)
	}
	return atoms
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func compareComponents(a, b [][]versionAtom) int {
	for i := 0; i < max(len(a), len(b)); i++ {
		var ca, cb []versionAtom
		if i < len(a) {
			ca = a[i]
		}
		if i < len(b) {
			cb = b[i]
		}
		for j := 0; j < max(len(ca), len(cb)); j++ {
			x, y := zeroAtom, zeroAtom
			if j < len(ca) {
				x = ca[j]
			}
			if j < len(cb) {
				y = cb[j]
			}
			if c := compareAtoms(x, y); c != 0 {
				return c
			}
		}
	}
	return 0
}

func compareAtoms(x, y versionAtom) int {
	if x.kind != y.kind {
		if x.kind < y.kind {
			return -1
		}
		return 1
	}
	switch x.kind {
	case atomNum:
		if len(x.s) != len(y.s) {
			if len(x.s) < len(y.s) {
				return -1
			}
			return 1
		}
		return strings.Compare(x.s, y.s)
	case atomStr:
		return strings.Compare(x.s, y.s)
	}
	return 0
}
