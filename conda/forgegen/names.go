package forgegen

import (
	"math/bits"
	"slices"
	"strings"
)

// kind is how a name's builds look and what they depend on.
type kind uint8

const (
	kindCLib     kind = iota // h<hash>_<n>, libgcc-ng
	kindPyExt                // py312h<hash>_<n>, python, python_abi
	kindR                    // r43h<hash>_<n>, r-base
	kindPyNoarch             // pyhd8ed1ab_<n>, noarch: python
	kindGeneric              // h<hash>_<n>, noarch: generic
	kindRNoarch              // r43hc72bb7e_<n>, noarch: generic
	kindPyABI                // 4_cp312 (python_abi)
)

func (k kind) noarch() bool { return k == kindPyNoarch || k == kindGeneric || k == kindRNoarch }

// versionStyle is how a name numbers its versions.
type versionStyle uint8

const (
	styleSemver versionStyle = iota // major.minor.patch
	styleTwo                        // major.minor
	styleCalver                     // year.month.0
	stylePython                     // 3.<8+k%6>.<k/6>
	styleABI                        // 3.<8+k>
	styleRBase                      // 4.<1+k%4>.<k/4>
	styleGCC                        // <12+k%3>.<k/3>.0 (libgcc-ng >=12 always matches)
)

// Python and R versions the builds of extension kinds are made for.
var (
	pythons = []int{8, 9, 10, 11, 12, 13} // 3.x
	rs      = []int{1, 2, 3, 4}           // 4.x
)

// nameInfo is what the generator keeps per name: enough to produce the
// name's records and to write version specs against it, and nothing per
// record.
type nameInfo struct {
	name     string
	kind     kind
	style    versionStyle
	m0       uint8 // first major version
	a, b     uint8 // patches per minor, minors per major
	variants uint8 // builds per version besides build numbers
	builds   uint8 // build numbers per version and variant
	count    int32 // records in each subdir of its group
	versions int32
	license  uint8
	family   bool // records carry license_family
	deps     []*nameInfo
	cons     []*nameInfo
	first    int32 // name-order index of its first record in its subdirs
}

// Hubs: names conda-forge's records depend on most, so that depends look
// like the real ones. The first arch hubs are also the structural
// dependencies of the kinds (python, python_abi, libgcc-ng, ...).
var archHubs = []struct {
	name string
	kind kind
}{
	{"python", kindCLib}, {"python_abi", kindPyABI}, {"libgcc-ng", kindCLib}, {"libstdcxx-ng", kindCLib},
	{"r-base", kindCLib}, {"numpy", kindPyExt}, {"libzlib", kindCLib}, {"openssl", kindCLib},
	{"ca-certificates", kindCLib}, {"zstd", kindCLib}, {"xz", kindCLib}, {"bzip2", kindCLib},
	{"libffi", kindCLib}, {"ncurses", kindCLib}, {"libcurl", kindCLib}, {"libblas", kindCLib},
	{"_openmp_mutex", kindCLib}, {"libprotobuf", kindCLib}, {"libabseil", kindCLib}, {"pyyaml", kindPyExt},
}

var noarchHubs = []struct {
	name string
	kind kind
}{
	{"setuptools", kindPyNoarch}, {"pip", kindPyNoarch}, {"packaging", kindPyNoarch},
	{"typing_extensions", kindPyNoarch}, {"requests", kindPyNoarch}, {"six", kindPyNoarch},
	{"tzdata", kindGeneric}, {"r-rlang", kindRNoarch},
}

var syllables = strings.Fields("ab ac al an ar ba be bi bo ca ce co cu da de di do el en er fa fi fo ga ge gi go " +
	"ha he hi ho in io ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po ra re ri ro ru " +
	"sa se si so su ta te ti to tu va ve vi vo xa ya yo za ze zo qu ph th st tr sp")

var suffixes = strings.Fields("core utils plugin cli base data tools api sdk python client server io http " +
	"json xml test lite extra")

// names builds the universe: archN names for the arch subdirs and
// noarchN for noarch, hubs first, the rest made of syllables. It returns
// them in popularity order (hubs, then a shuffle).
func makeNames(r *rng, archN, noarchN int) []*nameInfo {
	seen := map[string]bool{}
	var out []*nameInfo
	add := func(name string, k kind) {
		seen[name] = true
		out = append(out, &nameInfo{name: name, kind: k})
	}
	for _, h := range archHubs[:min(len(archHubs), archN)] {
		add(h.name, h.kind)
	}
	for _, h := range noarchHubs[:min(len(noarchHubs), noarchN)] {
		add(h.name, h.kind)
	}
	hubs := len(out)
	fresh := func() string {
		for {
			var b strings.Builder
			switch r.pick([]int{50, 12, 8, 10, 20}) {
			case 1:
				b.WriteString("py")
			case 2:
				b.WriteString("lib")
			case 3:
				b.WriteString("r-")
			}
			for range r.between(2, 4) {
				b.WriteString(syllables[r.intn(len(syllables))])
			}
			if r.percent(25) {
				b.WriteString([]string{"-", "_"}[r.intn(2)])
				b.WriteString(suffixes[r.intn(len(suffixes))])
			}
			if s := b.String(); !seen[s] {
				return s
			}
		}
	}
	for groupNoarch, want := range []int{archN, noarchN} {
		have := 0
		for _, n := range out {
			if n.kind.noarch() == (groupNoarch == 1) {
				have++
			}
		}
		for ; have < want; have++ {
			name := fresh()
			var k kind
			r4 := strings.HasPrefix(name, "r-")
			switch {
			case groupNoarch == 0 && r4:
				k = kindR
			case groupNoarch == 0:
				k = []kind{kindCLib, kindPyExt}[r.pick([]int{55, 45})]
			case r4:
				k = kindRNoarch
			default:
				k = []kind{kindPyNoarch, kindGeneric}[r.pick([]int{75, 25})]
			}
			add(name, k)
		}
	}
	rest := out[hubs:]
	for i := len(rest) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		rest[i], rest[j] = rest[j], rest[i]
	}
	for _, n := range out {
		shape(r, n)
	}
	return out
}

// shape draws a name's version style, build variants and license.
func shape(r *rng, n *nameInfo) {
	n.style = versionStyle(r.pick([]int{75, 15, 10}))
	n.m0 = uint8(r.pick([]int{30, 40, 15, 10, 5}))
	n.a = uint8(r.between(2, 8))
	n.b = uint8(r.between(3, 12))
	n.builds = uint8(1 + r.pick([]int{70, 22, 8}))
	switch n.kind {
	case kindPyExt:
		n.variants = uint8(r.between(2, 5))
	case kindR:
		n.variants = 2
	case kindCLib:
		n.variants = uint8(1 + r.pick([]int{80, 20}))
	case kindPyABI:
		n.variants = 4
	default:
		n.variants = 1
	}
	n.license = uint8(r.intn(len(licenses)))
	n.family = r.percent(70)
	switch n.name {
	case "python":
		n.style, n.variants, n.builds = stylePython, 1, 1
	case "python_abi":
		n.style, n.variants, n.builds = styleABI, 1, 1
	case "r-base":
		n.style, n.variants, n.builds = styleRBase, 1, 1
	case "libgcc-ng", "libstdcxx-ng":
		n.style = styleGCC
	}
}

// structural are the names the kinds depend on by rule; they are never
// drawn as a name's own dependencies.
var structural = map[string]bool{"python": true, "python_abi": true, "r-base": true}

// minCount is the number of records a structural name needs so that every
// spec the kinds write against it has a match: every Python (R) version
// the extension builds are made for.
func minCount(n *nameInfo) int32 {
	switch n.style {
	case stylePython, styleABI:
		return int32(len(pythons))
	case styleRBase:
		return int32(len(rs))
	}
	return 1
}

// allocate gives each name of group a record count: count[i] >= 1 and
// the sum is total, following a power law over a random rank (many names
// with one or two records, some with hundreds or thousands, as
// conda-forge's).
// Integer arithmetic only, so the result is the same on every platform.
func allocate(r *rng, group []*nameInfo, total int) {
	n := len(group)
	if n == 0 {
		return
	}
	rank := make([]int, n)
	for i := range rank {
		rank[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := r.intn(i + 1)
		rank[i], rank[j] = rank[j], rank[i]
	}
	// weight ~ (rank+60)^-1.5: with 25,000 names and 500,000 records the
	// median name has 2 records, the largest about 4,000, some 600 have
	// 100 or more.
	const offset = 60
	weight := func(i int) uint64 {
		x := uint64(rank[i] + offset)
		return (1 << 56) / (x * isqrt(x<<20))
	}
	var sum uint64
	for i := range n {
		sum += weight(i)
	}
	extra := uint64(total - n)
	var cum uint64
	prev := uint64(0)
	for i, g := range group {
		cum += weight(i)
		hi, lo := bits.Mul64(extra, cum)
		at, _ := bits.Div64(hi, lo, sum)
		g.count = int32(1 + at - prev)
		prev = at
	}
	// Structural names get the counts they need (python_abi exactly one
	// record per Python), taken from or given to the largest other name.
	largest := -1
	for i, g := range group {
		if !structural[g.name] && (largest < 0 || g.count > group[largest].count) {
			largest = i
		}
	}
	for _, g := range group {
		want := minCount(g)
		if g.style == styleABI || g.count < want {
			if largest >= 0 && group[largest].count+g.count-want >= 1 {
				group[largest].count += g.count - want
				g.count = want
			}
		}
	}
	for _, g := range group {
		per := int32(g.variants) * int32(g.builds)
		g.versions = (g.count + per - 1) / per
	}
}

// chooseDeps draws each name's own dependencies and constraints from the
// popular names (a cubic skew towards the hubs), never itself nor a
// structural name.
func chooseDeps(r *rng, pop []*nameInfo) {
	m := len(pop)
	draw := func(n *nameInfo) *nameInfo {
		u := uint64(r.intn(m))
		t := pop[u*u/uint64(m)*u/uint64(m)]
		if t == n || structural[t.name] || slices.Contains(n.deps, t) || slices.Contains(n.cons, t) {
			return nil
		}
		return t
	}
	for _, n := range pop {
		if structural[n.name] || n.kind == kindPyABI {
			continue
		}
		want := r.pick([]int{12, 18, 20, 18, 12, 8, 6, 4, 2})
		for range want * 2 {
			if len(n.deps) == want {
				break
			}
			if t := draw(n); t != nil {
				n.deps = append(n.deps, t)
			}
		}
		if r.percent(10) {
			if t := draw(n); t != nil {
				n.cons = append(n.cons, t)
			}
		}
	}
}

// isqrt is the integer square root (Newton's method).
func isqrt(n uint64) uint64 {
	x, y := n, (n+1)/2
	for y < x {
		x, y = y, (y+n/y)/2
	}
	return x
}
