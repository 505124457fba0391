package jobs

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

func TestItemsSpec(t *testing.T) {
	files := []*v1.PackageVersion{
		{Package: "numpy", Version: "1.9.3"},
		{Package: "numpy", Version: "1.26.0"},
		{Package: "numpy", Version: "2.0.0"},
		{Package: "numpy-base", Version: "1.26.0"},
		{Package: "my-tool", Version: "0.1"},
		{Package: "my-lib", Version: "3.0a1"},
		{Package: "scipy", Version: "1.11.0"},
	}
	for _, tc := range []struct {
		spec string
		want string // selected package-version pairs
	}{
		{"*", "numpy-1.9.3 numpy-1.26.0 numpy-2.0.0 numpy-base-1.26.0 my-tool-0.1 my-lib-3.0a1 scipy-1.11.0"},
		{"", ""},
		{"numpy", "numpy-1.9.3 numpy-1.26.0 numpy-2.0.0"},
		{"NumPy", ""},
		{"NUMPY*", "numpy-1.9.3 numpy-1.26.0 numpy-2.0.0 numpy-base-1.26.0"},
		{"my-*", "my-tool-0.1 my-lib-3.0a1"},
		{"*-*", "numpy-base-1.26.0 my-tool-0.1 my-lib-3.0a1"},
		{"*py", "numpy-1.9.3 numpy-1.26.0 numpy-2.0.0 scipy-1.11.0"},
		{"numpy>=1.10,<2", "numpy-1.26.0"}, // version order, not string order
		{"numpy==2.0", "numpy-2.0.0"},      // 2.0 == 2.0.0 in conda's order
		{"numpy>1.26.0", "numpy-2.0.0"},
		{"numpy<=1.9.3", "numpy-1.9.3"},
		{"my-lib<3.0", "my-lib-3.0a1"},
		{"numpy<1.10 scipy", "numpy-1.9.3 scipy-1.11.0"},
		{"  scipy\tmy-tool  ", "my-tool-0.1 scipy-1.11.0"},
	} {
		spec, err := ParseItemsSpec(tc.spec)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		var got []string
		for _, f := range files {
			if spec.Match(f) {
				got = append(got, f.Package+"-"+f.Version)
			}
		}
		want := strings.Fields(tc.want)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%q selects %v, want %v", tc.spec, got, want)
		}
	}
	for _, bad := range []string{"numpy!=1.0", "numpy~=1.0", "numpy=1.0", "numpy>=", "numpy>=1.0,", ">=1.0", "num/py", strings.Repeat("a", MaxItemsSpec+1)} {
		if _, err := ParseItemsSpec(bad); !errors.Is(err, ErrItemsSpec) {
			t.Errorf("%q: err %v, want ErrItemsSpec", bad, err)
		}
	}
}

// FuzzParseItemsSpec parses untrusted items_spec values (POST /api/jobs).
// Oracle: a pattern's match agrees with the equivalent regular
// expression, and a parsed spec matches without panicking.
func FuzzParseItemsSpec(f *testing.F) {
	for _, s := range []string{"*", "numpy>=1.0,<2", "my-*", "a*b*c", "**", "x==1!2.0+local", "numpy<1 scipy"} {
		f.Add(s, "numpy", "1.0")
	}
	f.Fuzz(func(t *testing.T, spec, name, version string) {
		parsed, err := ParseItemsSpec(spec)
		if err != nil {
			return
		}
		parsed.Match(&v1.PackageVersion{Package: name, Version: version})
		for _, sp := range parsed.specs {
			if !strings.Contains(sp.name, "*") {
				continue
			}
			re := regexp.MustCompile("(?is)^" + strings.ReplaceAll(regexp.QuoteMeta(sp.name), `\*`, ".*") + "$")
			if got, want := globFold(sp.name, name), re.MatchString(strings.ToLower(name)); got != want {
				t.Fatalf("pattern %q, name %q: glob %v, regexp %v", sp.name, name, got, want)
			}
		}
	})
}
