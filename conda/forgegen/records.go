package forgegen

import (
	"cmp"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
)

// Record is one generated repodata record.
type Record struct {
	// Filename is name-version-build plus .conda or .tar.bz2: builds
	// from before conda-forge moved to .conda (December 2022) are
	// .tar.bz2.
	Filename             string
	Name, Version, Build string
	BuildNumber          int
	Depends, Constrains  []string
	License              string
	// LicenseFamily is empty when the record has none (as older ones).
	LicenseFamily string
	MD5, SHA256   string
	Size          int64
	Subdir        string
	// Noarch is "python" or "generic" in noarch, else empty.
	Noarch    string
	Timestamp int64 // milliseconds
	// Package holds the bytes of a real package file for the names of
	// Config.Real (MD5, SHA256 and Size are its own), else nil.
	Package []byte
}

// Conda reports whether the record is listed under packages.conda.
func (r *Record) Conda() bool { return strings.HasSuffix(r.Filename, conda.ExtConda) }

var licenses = []struct{ name, family string }{
	{"MIT", "MIT"}, {"BSD-3-Clause", "BSD"}, {"Apache-2.0", "Apache"}, {"GPL-3.0-or-later", "GPL3"},
	{"GPL-2.0-or-later", "GPL2"}, {"LGPL-2.1-or-later", "LGPL"}, {"MPL-2.0", "MOZILLA"},
	{"BSD-2-Clause", "BSD"}, {"ISC", "OTHER"}, {"PSF-2.0", "PSF"}, {"Zlib", "OTHER"},
	{"Apache-2.0 OR MIT", "OTHER"}, {"LicenseRef-Proprietary", "PROPRIETARY"},
}

// Times in milliseconds: records are stamped between t0 and t1; .conda
// from condaFrom on.
const (
	t0        int64 = 1483228800000 // 2017-01-01
	t1        int64 = 1793491200000 // 2026-11-01
	condaFrom int64 = 1669852800000 // 2022-12-01
)

// sizeExp weights the size classes 2^12 .. 2^27 bytes.
var sizeExp = []int{2, 4, 8, 12, 16, 18, 16, 12, 9, 6, 4, 3, 2, 1, 1, 1}

// version returns the k-th version of n and its first two components.
func (n *nameInfo) version(k int) (string, int, int) {
	a, b := int(n.a), int(n.b)
	var major, minor, patch int
	three := true
	switch n.style {
	case styleSemver:
		major, minor, patch = int(n.m0)+k/(a*b), (k/a)%b, k%a
	case styleTwo:
		major, minor, three = int(n.m0)+k/b, k%b, false
	case styleCalver:
		major, minor = 2018+k/6, 1+(k%6)*2
	case stylePython: // every minor first, then patches
		major, minor, patch = 3, pythons[k%len(pythons)], k/len(pythons)
	case styleABI:
		major, minor, three = 3, pythons[0]+k, false
	case styleRBase:
		major, minor, patch = 4, rs[k%len(rs)], k/len(rs)
	case styleGCC:
		major, minor = 12+k%3, k/3
	}
	s := strconv.Itoa(major) + "." + strconv.Itoa(minor)
	if three {
		s += "." + strconv.Itoa(patch)
	}
	return s, major, minor
}

// spec writes a dependency on t for a record of version v of a name with
// nv versions: the lower bound follows the record's age, and the form is
// fixed per pair of names (as a recipe's pin is).
func spec(from, t *nameInfo, v, nv int) string {
	tv := 0
	if nv > 1 {
		tv = (int(t.versions) - 1) * v / (nv - 1)
	}
	ver, major, minor := t.version(tv)
	form := (hashString(from.name+"\x00"+t.name) >> 7) % 20
	switch {
	case form < 8:
		return t.name + " >=" + ver + ",<" + strconv.Itoa(major+1) + ".0a0"
	case form < 13:
		return t.name + " >=" + ver
	case form < 17:
		return t.name
	case form < 19:
		return t.name + " " + strconv.Itoa(major) + "." + strconv.Itoa(minor) + ".*"
	default:
		return t.name + " >=" + ver + ",<" + strconv.Itoa(major) + "." + strconv.Itoa(minor+1) + ".0a0"
	}
}

// records generates the records of name n in subdir, sorted by file name,
// from the seed, the subdir and the name alone (so a name's records are the
// same whenever they are generated); n.first places them in name order for
// Config.Change.
func (c *Channel) records(subdir string, n *nameInfo) ([]Record, error) {
	r := newRNG(c.cfg.Seed, hashString(subdir), hashString(n.name))
	nv := int(n.versions)
	start := t0 + int64(r.intn(int((t1-t0)*3/4)))
	if n.style == styleABI || n.style == stylePython || n.style == styleRBase {
		start = t0
	}
	step := (t1 - start) / int64(nv)
	noarch := ""
	switch n.kind {
	case kindPyNoarch:
		noarch = "python"
	case kindGeneric, kindRNoarch:
		noarch = "generic"
	}
	lic := licenses[n.license]
	out := make([]Record, 0, n.count)
	for v := 0; v < nv && len(out) < int(n.count); v++ {
		ver, _, _ := n.version(v)
		stamp := start + int64(v)*step + int64(r.intn(int(step/2)+1))
		for j := 0; j < int(n.variants) && len(out) < int(n.count); j++ {
			hash := r.hex(4)[:7]
			for bn := 0; bn < int(n.builds) && len(out) < int(n.count); bn++ {
				rec := Record{
					Name: n.name, Version: ver, BuildNumber: bn, Subdir: subdir, Noarch: noarch,
					License: lic.name, Timestamp: stamp + int64(j)*1000 + int64(bn)*3600000,
				}
				if n.family {
					rec.LicenseFamily = lic.family
				}
				rec.Build, rec.Depends = c.build(n, v, j, bn, hash)
				for _, t := range n.deps {
					rec.Depends = append(rec.Depends, spec(n, t, v, nv))
				}
				for _, t := range n.cons {
					rec.Constrains = append(rec.Constrains, spec(n, t, v, nv))
				}
				slices.Sort(rec.Depends)
				e := 12 + r.pick(sizeExp)
				rec.Size = int64(1)<<e + int64(r.intn(1<<e))
				rec.MD5, rec.SHA256 = r.hex(16), r.hex(32)
				ext := conda.ExtTarBz2
				if rec.Timestamp >= condaFrom {
					ext = conda.ExtConda
				}
				rec.Filename = rec.Name + "-" + rec.Version + "-" + rec.Build + ext
				out = append(out, rec)
			}
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.Filename, b.Filename) })
	if ch := c.cfg.Change; ch != nil && ch.Subdir == subdir && ch.Index >= int(n.first) && ch.Index < int(n.first)+len(out) {
		rec := &out[ch.Index-int(n.first)]
		cr := newRNG(c.cfg.Seed, hashString(subdir), uint64(ch.Index), 0xc4a9)
		rec.MD5, rec.SHA256 = cr.hex(16), cr.hex(32)
		rec.Size++
		rec.Timestamp++
	}
	if c.real[n.name] {
		for i := range out {
			if err := realPackage(&out[i]); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// build returns the build string of variant j, build number bn of
// version v, and the dependencies the kind brings.
func (c *Channel) build(n *nameInfo, v, j, bn int, hash string) (string, []string) {
	suffix := "h" + hash + "_" + strconv.Itoa(bn)
	var deps []string
	add := func(name, spec string) {
		if c.byName[name] != nil {
			deps = append(deps, strings.TrimSpace(name+" "+spec))
		}
	}
	window := func(list []int) int {
		span := len(list) - int(n.variants)
		if span <= 0 || n.versions <= 1 {
			return list[min(j, len(list)-1)]
		}
		return list[span*v/int(n.versions-1)+j]
	}
	switch n.kind {
	case kindPyExt:
		py := strconv.Itoa(window(pythons))
		add("python", ">=3."+py+",<3."+strconv.Itoa(window(pythons)+1)+".0a0")
		add("python_abi", "3."+py+".* *_cp3"+py)
		add("libgcc-ng", ">=12")
		return "py3" + py + suffix, deps
	case kindR:
		rv := window(rs)
		add("r-base", ">=4."+strconv.Itoa(rv)+",<4."+strconv.Itoa(rv+1)+".0a0")
		add("libgcc-ng", ">=12")
		return "r4" + strconv.Itoa(rv) + suffix, deps
	case kindRNoarch:
		rv := window(rs)
		add("r-base", ">=4."+strconv.Itoa(rv)+",<4."+strconv.Itoa(rv+1)+".0a0")
		return "r4" + strconv.Itoa(rv) + "hc72bb7e_" + strconv.Itoa(bn), deps
	case kindPyNoarch:
		add("python", ">=3."+strconv.Itoa(window(pythons)))
		return "pyhd8ed1ab_" + strconv.Itoa(bn), deps
	case kindPyABI:
		return strconv.Itoa(4+bn) + "_cp3" + strconv.Itoa(pythons[0]+v), nil
	case kindCLib:
		if n.name != "libgcc-ng" && n.name != "libstdcxx-ng" && n.name != "_openmp_mutex" {
			add("libgcc-ng", ">=12")
		}
		if j > 0 {
			add("libstdcxx-ng", ">=12")
		}
	}
	return suffix, deps
}

// realPackage builds rec as a real package file (condatest) and takes its
// digests and size.
func realPackage(rec *Record) error {
	override := map[string]any{"license": rec.License}
	if rec.LicenseFamily != "" {
		override["license_family"] = rec.LicenseFamily
	}
	if len(rec.Constrains) > 0 {
		override["constrains"] = rec.Constrains
	}
	s := condatest.Spec{
		Name: rec.Name, Version: rec.Version, Build: rec.Build, Subdir: rec.Subdir, BuildNumber: rec.BuildNumber,
		Depends: rec.Depends, Noarch: rec.Noarch, Timestamp: rec.Timestamp, IndexOverride: override,
		Files: map[string]string{"share/forgegen/" + rec.Name + "/" + strings.TrimSuffix(rec.Filename, filepathExt(rec.Filename)) + ".txt": rec.Filename + "\n"},
		About: map[string]any{"license": rec.License, "summary": "Generated package " + rec.Name},
	}
	var b []byte
	var err error
	if rec.Conda() {
		b, err = condatest.BuildConda(s)
	} else {
		b, err = condatest.BuildTarBz2(s)
	}
	if err != nil {
		return fmt.Errorf("forgegen: %s: %w", rec.Filename, err)
	}
	m, h := md5.Sum(b), sha256.Sum256(b)
	rec.MD5, rec.SHA256, rec.Size, rec.Package = hex.EncodeToString(m[:]), hex.EncodeToString(h[:]), int64(len(b)), b
	return nil
}

func filepathExt(fn string) string {
	if strings.HasSuffix(fn, conda.ExtConda) {
		return conda.ExtConda
	}
	return conda.ExtTarBz2
}
