package conda

import (
	"fmt"
	"strings"
)

// Package file extensions.
const (
	ExtConda  = ".conda"
	ExtTarBz2 = ".tar.bz2"
)

// maxFilenameLen is the longest package file name accepted.
const maxFilenameLen = 255

// maxSubdirLen is the longest subdir name accepted.
const maxSubdirLen = 64

// Filename is a parsed package file name, name-version-build.ext.
type Filename struct {
	Name    string
	Version string
	Build   string
	Ext     string // ExtConda or ExtTarBz2
}

// ParseFilename splits a package file name such as
// "numpy-1.26.4-py312h8753938_0.conda" into its parts. The name is
// everything before the last two dashes. Besides the structural checks it
// rejects anything that could be unsafe as a path or URL segment: path
// separators, NUL and other control characters, "..", a leading dot and
// names longer than 255 bytes. The name must satisfy ValidPackageName and
// the version and build may only use [A-Za-z0-9_.+!]. Errors wrap
// ErrBadFilename.
func ParseFilename(fn string) (Filename, error) {
	bad := func(why string) (Filename, error) {
		return Filename{}, fmt.Errorf("%w %q: %s", ErrBadFilename, fn, why)
	}
	if fn == "" {
		return bad("empty")
	}
	if len(fn) > maxFilenameLen {
		return bad("too long")
	}
	for i := 0; i < len(fn); i++ {
		switch c := fn[i]; {
		case c == 0:
			return bad("contains NUL")
		case c < 0x20 || c == 0x7f:
			return bad("contains a control character")
		case c == '/' || c == '\\':
			return bad("contains a path separator")
		}
	}
	if strings.Contains(fn, "..") {
		return bad(`contains ".."`)
	}
	if fn[0] == '.' {
		return bad("starts with a dot")
	}
	var ext string
	switch {
	case strings.HasSuffix(fn, ExtConda):
		ext = ExtConda
	case strings.HasSuffix(fn, ExtTarBz2):
		ext = ExtTarBz2
	default:
		return bad("unknown extension")
	}
	stem := fn[:len(fn)-len(ext)]
	i := strings.LastIndexByte(stem, '-')
	if i < 0 {
		return bad("want name-version-build")
	}
	j := strings.LastIndexByte(stem[:i], '-')
	if j < 0 {
		return bad("want name-version-build")
	}
	f := Filename{Name: stem[:j], Version: stem[j+1 : i], Build: stem[i+1:], Ext: ext}
	switch {
	case f.Name == "":
		return bad("empty name")
	case f.Version == "":
		return bad("empty version")
	case f.Build == "":
		return bad("empty build")
	case !ValidPackageName(f.Name):
		return bad("invalid package name")
	case !validVersionOrBuild(f.Version):
		return bad("invalid character in version")
	case !validVersionOrBuild(f.Build):
		return bad("invalid character in build")
	}
	return f, nil
}

// String returns the file name, name-version-build.ext.
func (f Filename) String() string { return f.Stem() + f.Ext }

// Stem returns the file name without its extension, name-version-build.
func (f Filename) Stem() string { return f.Name + "-" + f.Version + "-" + f.Build }

// IsPackageFile reports whether fn has a conda package extension. It does
// not validate the rest of the name.
func IsPackageFile(fn string) bool {
	return strings.HasSuffix(fn, ExtConda) || strings.HasSuffix(fn, ExtTarBz2)
}

// ValidPackageName reports whether name is a valid conda package name:
// one or more of [a-z0-9_.-], not starting with '.' or '-'.
func ValidPackageName(name string) bool {
	if name == "" || name[0] == '.' || name[0] == '-' || len(name) > maxFilenameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidSubdir reports whether s is a plausible subdir (platform) name such
// as noarch, linux-64, osx-arm64, win-64 or emscripten-wasm32: one to 64 of
// [a-z0-9_-].
func ValidSubdir(s string) bool {
	if s == "" || len(s) > maxSubdirLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validVersionOrBuild reports whether s only uses the characters conda
// allows in version and build strings.
func validVersionOrBuild(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == '+' || c == '!') {
			return false
		}
	}
	return true
}
