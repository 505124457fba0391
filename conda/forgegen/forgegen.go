// Package forgegen generates a conda channel shaped like conda-forge, of
// any size, deterministically: the same Config gives the same bytes. It
// is the upstream of the conda-forge-scale tests and benchmarks (issue
// 11), served by nginx.
//
// The channel has a universe of names split between the arch subdirs
// (each gets the same names, Config.Records records each) and noarch
// (Config.NoarchRecords). Record counts per name follow a power law over
// a random rank: many names with a few records, some with hundreds or
// thousands. A name has a kind (C library, Python extension, R package,
// noarch Python, noarch generic) that shapes its build strings
// (py312h1a2b3c4_0, pyhd8ed1ab_1, r43h…_0, h…_0) and its dependencies
// (python, python_abi, r-base, libgcc-ng, with the pins conda-forge
// writes); each name also depends on a few others drawn with a skew
// towards popular names, with version specs against versions those names
// have. Every name a record depends on or constrains is in the channel.
// Records carry version, build, build_number, depends, constrains (some),
// license, license_family (most), md5, sha256, size, subdir, timestamp and
// noarch; those stamped before December 2022 are .tar.bz2 under
// "packages", later ones .conda under "packages.conda". Digests are random
// except for the names of Config.Real, whose records are real package
// files (conda/condatest) with their own digests and sizes.
//
// repodata.json is written streaming, in conda-index's layout (sorted
// keys, two-space indent, info.subdir, repodata_version 1, removed): the
// generator holds a small struct per name and the records of one name at a
// time, never the channel.
package forgegen

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/condamesh/condamesh/conda"
)

// ErrConfig is returned for a configuration that cannot be generated.
var ErrConfig = errors.New("forgegen: bad config")

// Config describes a channel.
type Config struct {
	// Seed selects the channel; the same Config gives the same bytes.
	Seed uint64
	// Records is the number of records in each arch subdir.
	Records int
	// NoarchRecords is the number of records in noarch (0: an empty
	// noarch).
	NoarchRecords int
	// Names is the size of the name universe over arch and noarch, split
	// in proportion to their records. Zero: one name per 20 records, as
	// conda-forge's linux-64 (about 25,000 names for 500,000 records).
	Names int
	// Subdirs are the arch subdirs; default linux-64. noarch is always
	// written too.
	Subdirs []string
	// Real names get real package files (Record.Package).
	Real []string
	// Change, if set, alters one record: a variant of the channel for the
	// benchmark of an upstream change.
	Change *Change
}

// Change names the record to alter: Index counts the subdir's records in
// name order (names sorted, each name's records sorted by file name; not
// the document order, which lists packages before packages.conda). Its
// md5, sha256, size and timestamp change, as for a file rebuilt under the
// same name.
type Change struct {
	Subdir string
	Index  int
}

// Noarch is the name of the noarch subdir.
const Noarch = "noarch"

// Channel is a generated channel.
type Channel struct {
	cfg    Config
	groups map[string][]*nameInfo // subdir -> names, sorted
	byName map[string]*nameInfo
	real   map[string]bool
}

// New plans the channel: names, their record counts and dependencies.
func New(cfg Config) (*Channel, error) {
	if len(cfg.Subdirs) == 0 {
		cfg.Subdirs = []string{"linux-64"}
	}
	for _, s := range cfg.Subdirs {
		if !conda.ValidSubdir(s) || s == Noarch {
			return nil, fmt.Errorf("%w: subdir %q", ErrConfig, s)
		}
	}
	if cfg.Records < 1 || cfg.NoarchRecords < 0 {
		return nil, fmt.Errorf("%w: records %d, noarch records %d", ErrConfig, cfg.Records, cfg.NoarchRecords)
	}
	total := cfg.Records + cfg.NoarchRecords
	if cfg.Names == 0 {
		cfg.Names = max(1, total/20)
	}
	noarchN := 0
	if cfg.NoarchRecords > 0 {
		noarchN = max(1, cfg.Names*cfg.NoarchRecords/total)
	}
	archN := cfg.Names - noarchN
	if archN < 1 || archN > cfg.Records || noarchN > cfg.NoarchRecords {
		return nil, fmt.Errorf("%w: %d names for %d records (every name needs a record)", ErrConfig, cfg.Names, total)
	}
	r := newRNG(cfg.Seed, 0x666f726765)
	pop := makeNames(r, archN, noarchN)
	c := &Channel{cfg: cfg, groups: map[string][]*nameInfo{}, byName: map[string]*nameInfo{}, real: map[string]bool{}}
	var arch, noarch []*nameInfo
	for _, n := range pop {
		c.byName[n.name] = n
		if n.kind.noarch() {
			noarch = append(noarch, n)
		} else {
			arch = append(arch, n)
		}
	}
	allocate(r, arch, cfg.Records)
	allocate(r, noarch, cfg.NoarchRecords)
	chooseDeps(r, pop)
	for _, g := range [][]*nameInfo{arch, noarch} {
		slices.SortFunc(g, func(a, b *nameInfo) int { return strings.Compare(a.name, b.name) })
		first := int32(0)
		for _, n := range g {
			n.first = first
			first += n.count
		}
	}
	for _, s := range cfg.Subdirs {
		c.groups[s] = arch
	}
	c.groups[Noarch] = noarch
	for _, name := range cfg.Real {
		if c.byName[name] == nil {
			return nil, fmt.Errorf("%w: real package name %q is not in the channel", ErrConfig, name)
		}
		c.real[name] = true
	}
	if ch := cfg.Change; ch != nil {
		if _, ok := c.groups[ch.Subdir]; !ok || ch.Index < 0 || ch.Index >= c.Len(ch.Subdir) {
			return nil, fmt.Errorf("%w: change %s/%d is not a record", ErrConfig, ch.Subdir, ch.Index)
		}
	}
	return c, nil
}

// Subdirs returns the arch subdirs, then noarch.
func (c *Channel) Subdirs() []string { return append(slices.Clone(c.cfg.Subdirs), Noarch) }

// Names returns the names of subdir, sorted.
func (c *Channel) Names(subdir string) []string {
	var out []string
	for _, n := range c.groups[subdir] {
		out = append(out, n.name)
	}
	return out
}

// Len returns the number of records of subdir.
func (c *Channel) Len(subdir string) int {
	n := 0
	for _, g := range c.groups[subdir] {
		n += int(g.count)
	}
	return n
}

// Each passes the records of subdir to fn in name order (see Change), one
// name's records at a time.
func (c *Channel) Each(subdir string, fn func(Record) error) error {
	for _, n := range c.groups[subdir] {
		recs, err := c.records(subdir, n)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// NameRecords returns the records of one name in subdir, sorted by file
// name.
func (c *Channel) NameRecords(subdir, name string) ([]Record, error) {
	for _, n := range c.groups[subdir] {
		if n.name == name {
			return c.records(subdir, n)
		}
	}
	return nil, fmt.Errorf("%w: no name %q in %s", ErrConfig, name, subdir)
}

// Record returns the record at index k of subdir in name order.
func (c *Channel) Record(subdir string, k int) (Record, error) {
	for _, n := range c.groups[subdir] {
		if k >= int(n.first) && k < int(n.first+n.count) {
			recs, err := c.records(subdir, n)
			if err != nil {
				return Record{}, err
			}
			return recs[k-int(n.first)], nil
		}
	}
	return Record{}, fmt.Errorf("%w: no record %d in %s", ErrConfig, k, subdir)
}
