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
	return compareParsed(parseVersion(a), parseVersion(b))
}

// compareParsed is CompareVersions of parsed versions.
func compareParsed(va, vb parsedVersion) int {
	if c := compareComponents(va.release, vb.release); c != 0 {
		return c
	}
	return compareComponents(va.local, vb.local)
}

func parseVersion(v string) parsedVersion {
	var p parsedVersion
	parseVersionInto(&p, v)
	return p
}

// parseVersionInto parses v into p, reusing p's storage (a loop comparing
// many versions allocates nothing once it has seen the longest).
func parseVersionInto(p *parsedVersion, v string) {
	v = strings.ToLower(strings.TrimSpace(v))
	epoch := "0"
	if i := strings.IndexByte(v, '!'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
	}
	var local string
	if i := strings.IndexByte(v, '+'); i >= 0 {
		v, local = v[:i], v[i+1:]
	}
	p.release = nextComponent(p.release[:0])
	p.release[0] = appendAtoms(p.release[0], epoch)
	p.release = appendComponents(p.release, v)
	p.local = p.local[:0]
	if local != "" {
		p.local = appendComponents(p.local, local)
	}
}

// nextComponent extends comps by one empty component, reusing storage.
func nextComponent(comps [][]versionAtom) [][]versionAtom {
	if len(comps) < cap(comps) {
		comps = comps[:len(comps)+1]
		comps[len(comps)-1] = comps[len(comps)-1][:0]
		return comps
	}
	return append(comps, nil)
}

// appendComponents appends the components of v, split on '.', '_' and
// '-'. A trailing underscore is kept as a text atom, as conda does for
// openssl-like versions (1.1dev1 < 1.1_ < 1.1a1 < 1.1).
func appendComponents(comps [][]versionAtom, v string) [][]versionAtom {
	n := len(comps)
	for i := 0; i < len(v); {
		if isVersionSep(v[i]) {
			i++
			continue
		}
		j := i
		for j < len(v) && !isVersionSep(v[j]) {
			j++
		}
		comps = nextComponent(comps)
		comps[len(comps)-1] = appendAtoms(comps[len(comps)-1], v[i:j])
		i = j
	}
	if strings.HasSuffix(v, "_") && len(comps) > n {
		comps[len(comps)-1] = append(comps[len(comps)-1], versionAtom{kind: atomStr, s: "_"})
	}
	return comps
}

func isVersionSep(c byte) bool { return c == '.' || c == '_' || c == '-' }

// appendAtoms appends the digit and non-digit runs of a component. A
// component that starts with text gets a leading 0 atom.
func appendAtoms(atoms []versionAtom, c string) []versionAtom {
	if len(c) > 0 && !isDigit(c[0]) {
		atoms = append(atoms, zeroAtom)
	}
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
