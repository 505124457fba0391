package mirror

import (
	"encoding/hex"
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

func sha(b byte) []byte {
	s := make([]byte, 32)
	s[0] = b
	return s
}

// TestUpToDate is quetz-api.md §10 case 28: sha256 decides, then md5; no
// checksum anywhere means download.
func TestUpToDate(t *testing.T) {
	old, newSha := sha(1), sha(2)
	cases := []struct {
		name  string
		local *v1.PackageVersion
		up    candidate
		skip  bool
	}{
		{"absent locally", nil, candidate{sha256: old}, false},
		{"same sha", &v1.PackageVersion{Sha256: hex.EncodeToString(old)}, candidate{sha256: old}, true},
		{"new sha", &v1.PackageVersion{Sha256: hex.EncodeToString(old)}, candidate{sha256: newSha}, false},
		{"old sha, new md5", &v1.PackageVersion{Sha256: hex.EncodeToString(old), Md5: "a"}, candidate{sha256: old, md5: "b"}, true},
		{"new sha, old md5", &v1.PackageVersion{Sha256: hex.EncodeToString(old), Md5: "a"}, candidate{sha256: newSha, md5: "a"}, false},
		{"md5 only, same", &v1.PackageVersion{Md5: "a"}, candidate{sha256: old, md5: "a"}, true},
		{"md5 only, new", &v1.PackageVersion{Md5: "a"}, candidate{sha256: old, md5: "b"}, false},
		{"no local checksums", &v1.PackageVersion{}, candidate{sha256: newSha}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := upToDate(tc.local, tc.up); got != tc.skip {
				t.Fatalf("upToDate = %v, want %v", got, tc.skip)
			}
		})
	}
}

// TestSelected: Quetz's prefix semantics, plus fnmatch globs on name or
// filename.
func TestSelected(t *testing.T) {
	list := func(items ...string) *v1.StringList { return &v1.StringList{Items: items} }
	cases := []struct {
		md   *v1.ChannelMetadata
		file string
		want bool
	}{
		{nil, "numpy-1.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list("numpy")}, "numpy-base-1.0-0.conda", true}, // prefix, as Quetz
		{&v1.ChannelMetadata{Includelist: list("numpy")}, "scipy-1.0-0.conda", false},
		{&v1.ChannelMetadata{Includelist: list("nrn")}, "nrnpython-0.1-0.tar.bz2", true},
		{&v1.ChannelMetadata{Includelist: list("numpy")}, "numpydoc-1.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list("num?y")}, "numpy-1.0-0.conda", true}, // glob on the name
		{&v1.ChannelMetadata{Includelist: list("num?y")}, "numpydoc-1.0-0.conda", false},
		{&v1.ChannelMetadata{Includelist: list("*-1.0-*")}, "numpy-1.0-0.conda", true}, // glob on the filename
		{&v1.ChannelMetadata{Excludelist: list("cuda*")}, "cudatoolkit-11-0.conda", false},
		{&v1.ChannelMetadata{Excludelist: list("cuda*")}, "numpy-1.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list(), Excludelist: list("x")}, "x-1-0.conda", false}, // empty list = unset
		// fnmatch's negated set: [!m]* excludes every name not starting
		// with m (path.Match read it as the set {'!', 'm'}).
		{&v1.ChannelMetadata{Excludelist: list("[!m]*")}, "numpy-1.0-0.conda", false},
		{&v1.ChannelMetadata{Excludelist: list("[!m]*")}, "mkl-2024.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list("[!m]*")}, "!-1.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list("[!m]*")}, "mkl-2024.0-0.conda", false},
		{&v1.ChannelMetadata{Includelist: list("[a-c]*")}, "bzip2-1.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list("[a-c]*")}, "numpy-1.0-0.conda", false},
		{&v1.ChannelMetadata{Includelist: list("py*[!0-9]")}, "python-3.12-h0_0.conda", true}, // name pytho-n
		{&v1.ChannelMetadata{Includelist: list("numpy", "s?ipy")}, "scipy-1.0-0.conda", true},
		{&v1.ChannelMetadata{Includelist: list("numpy", "s?ipy")}, "sympy-1.0-0.conda", false},
		{&v1.ChannelMetadata{Excludelist: list("*.tar.bz2")}, "numpy-1.0-0.tar.bz2", false},
		{&v1.ChannelMetadata{Excludelist: list("*.tar.bz2")}, "numpy-1.0-0.conda", true},
	}
	for _, tc := range cases {
		if got := newFilter(tc.md).selected(tc.file); got != tc.want {
			t.Errorf("selected(%v, %s) = %v, want %v", tc.md, tc.file, got, tc.want)
		}
	}
}
