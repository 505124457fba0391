package conda

import (
	"errors"
	"strings"
	"testing"
)

func TestParseFilename(t *testing.T) {
	good := []struct {
		in   string
		want Filename
	}{
		{"numpy-1.26.4-py312h8753938_0.conda", Filename{"numpy", "1.26.4", "py312h8753938_0", ".conda"}},
		{"zlib-1.3-h0_0.tar.bz2", Filename{"zlib", "1.3", "h0_0", ".tar.bz2"}},
		{"python-dateutil-2.9.0-pyhd8ed1ab_0.conda", Filename{"python-dateutil", "2.9.0", "pyhd8ed1ab_0", ".conda"}},
		{"a-b-c.conda", Filename{"a", "b", "c", ".conda"}},
		{"ca-certificates-2024.2.2-hbcca054_0.conda", Filename{"ca-certificates", "2024.2.2", "hbcca054_0", ".conda"}},
		{"foo-1!2.0+local.1-0.tar.bz2", Filename{"foo", "1!2.0+local.1", "0", ".tar.bz2"}},
		{"_libgcc_mutex-0.1-conda_forge.tar.bz2", Filename{"_libgcc_mutex", "0.1", "conda_forge", ".tar.bz2"}},
		{"x.y-1-0.conda", Filename{"x.y", "1", "0", ".conda"}},
	}
	for _, tc := range good {
		got, err := ParseFilename(tc.in)
		if err != nil {
			t.Errorf("ParseFilename(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseFilename(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
		if stem := strings.TrimSuffix(tc.in, got.Ext); got.Stem() != stem {
			t.Errorf("Stem() = %q, want %q", got.Stem(), stem)
		}
	}
	bad := []string{
		"",
		"a-b",
		"a-b.conda",
		"x-1-0.zip",
		"x-1-0",
		"x-1-0.tar",
		"x-1-0.bz2",
		"../x-1-0.conda",
		"x-1..0-0.conda",
		"x-1-0..conda",
		"dir/x-1-0.conda",
		`dir\x-1-0.conda`,
		"x-1-0\x00.conda",
		"x-1-0\n.conda",
		"x-1-\x7f0.conda",
		".x-1-0.conda",
		"-1-0.conda",
		"x--0.conda",
		"x-1-.conda",
		".conda",
		"--.conda",
		"X-1-0.conda",
		"x y-1-0.conda",
		"x-1 2-0.conda",
		"x-1-0%2f.conda",
		"x-1-0?.conda",
		"-x-1-0.conda",
		strings.Repeat("a", 250) + "-1-0.conda",
	}
	for _, in := range bad {
		_, err := ParseFilename(in)
		if !errors.Is(err, ErrBadFilename) {
			t.Errorf("ParseFilename(%q) error = %v, want ErrBadFilename", in, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "conda: bad package filename ") {
			t.Errorf("ParseFilename(%q) error text %q", in, err)
		}
	}
}

func TestParseFilenameMessage(t *testing.T) {
	_, err := ParseFilename("x-1-0.zip")
	if want := `conda: bad package filename "x-1-0.zip": unknown extension`; err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

func TestValidPackageName(t *testing.T) {
	for _, name := range []string{
		"interesting-package", "valid.package.name", "valid_package_name", "validpackage1234",
		"_libgcc_mutex", "r-base", "a", "7zip",
	} {
		if !ValidPackageName(name) {
			t.Errorf("ValidPackageName(%q) = false, want true", name)
		}
	}
	for _, name := range []string{
		"InvalidPackage", "invalid package", "invalid%package", "**invalidpackage**", "błędnypakiet",
		"", ".hidden", "-dash", "a/b", "a\x00b",
	} {
		if ValidPackageName(name) {
			t.Errorf("ValidPackageName(%q) = true, want false", name)
		}
	}
}

func TestValidSubdir(t *testing.T) {
	for _, s := range []string{"noarch", "linux-64", "osx-arm64", "win-64", "emscripten-wasm32", "linux-aarch64", "zos-z"} {
		if !ValidSubdir(s) {
			t.Errorf("ValidSubdir(%q) = false", s)
		}
	}
	for _, s := range []string{"", "Linux-64", "linux/64", "..", "linux.64", strings.Repeat("a", 65), "linux 64"} {
		if ValidSubdir(s) {
			t.Errorf("ValidSubdir(%q) = true", s)
		}
	}
}

func TestIsPackageFile(t *testing.T) {
	for in, want := range map[string]bool{
		"a-1-0.conda": true, "a-1-0.tar.bz2": true, "a.tar.gz": false, "repodata.json": false, "conda": false,
	} {
		if got := IsPackageFile(in); got != want {
			t.Errorf("IsPackageFile(%q) = %v", in, got)
		}
	}
}
