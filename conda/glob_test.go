package conda

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// updateFnmatch regenerates testdata/glob/fnmatch.txt from Python's
// fnmatch.fnmatchcase (needs python3; the test itself does not):
//
//	go test ./conda -run TestGlobFnmatch -update-fnmatch
var updateFnmatch = flag.Bool("update-fnmatch", false, "regenerate testdata/glob/fnmatch.txt with python3")

const fnmatchTable = "testdata/glob/fnmatch.txt"

// globProbes are the names every generated set pattern is tried on.
var globProbes = []string{"a", "b", "m", "z", "-", "!", "]", "^", "\\", "[", "é", ""}

// globGroup is patterns each tried on every one of names.
type globGroup struct {
	Patterns []string `json:"P"`
	Names    []string `json:"N"`
}

// globGroups are the cases of the table: hand-written patterns of what
// conda users write on names like theirs, then every set of up to four
// characters over an alphabet of set syntax, tried on globProbes.
func globGroups() []globGroup {
	names := []string{
		"numpy-1.26.4-py312h8753938_0.conda", "numpy-base-1.26.4-py312_0.conda", "numpydoc-1.0-py_0.tar.bz2",
		"mkl-2024.0-h0_0.conda", "m", "", "python", "python-3.12.0-h0_0.conda", "[!m]x", "a*b", "a?c", "abc",
		"libzlib-1.3-h0_0.conda", "zlib", "Numpy", "nrnpython-8.2-py_0.conda", "é-1-0.conda", "a/b", "a\nb",
	}
	patterns := []string{
		"*", "", "?", "[!m]*", "[m]*", "numpy", "numpy*", "numpy-*", "*.conda", "*-py312*", "num?y*", "[a-m]*",
		"[!a-m]*", "[]]", "[!]]", "[]", "[!]", "[", "[a", "a[", "*[", "[z-a]*", "[!z-a]*", "[z-am]*", "[a-]*",
		"[-a]*", "[!-a]*", "[a-b-c]", "[a--]", "[--a]", "[a-z-]", "[\\]*", "[\\-a]*", "[^a]*", "[[]*", "[&~|]*",
		"**", "*a*b*", "a*", "*b", "?*", "*?", "???", "[Nn]umpy*", "py*[0-9]_0.conda", "*[!0-9].conda", "é*",
		"[é]*", "[!é]*", "a?b", "a*b", "*\n*", "[z-a!]", "[c-ab-d]", "[!c-ab]", "lib*-[0-9]*", "[b-0!-0]", "[z-a!-m]*",
	}
	var sets []string
	for _, s := range setStrings("ab!-]\\z", 4) {
		sets = append(sets, "["+s+"]")
	}
	return []globGroup{{patterns, names}, {sets, globProbes}}
}

// setStrings lists every string over alphabet of at most max characters.
func setStrings(alphabet string, max int) []string {
	out := []string{""}
	level := []string{""}
	for range max {
		var next []string
		for _, s := range level {
			for _, r := range alphabet {
				next = append(next, s+string(r))
			}
		}
		out = append(out, next...)
		level = next
	}
	return out
}

// TestGlobFnmatch: CompileGlob matches as Python's fnmatch.fnmatchcase
// does, on every case of the checked-in table (made by python3).
func TestGlobFnmatch(t *testing.T) {
	groups := globGroups()
	if *updateFnmatch {
		writeFnmatchTable(t, groups)
	}
	f, err := os.Open(fnmatchTable)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	bad, n := 0, 0
	for _, g := range groups {
		for _, p := range g.Patterns {
			var row [2]string // the pattern, and for each name "1" (match) or "0"
			if !sc.Scan() {
				t.Fatalf("%s ends before %q: run with -update-fnmatch", fnmatchTable, p)
			}
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatalf("%s: %v", fnmatchTable, err)
			}
			if row[0] != p || len(row[1]) != len(g.Names) {
				t.Fatalf("%s has %q (%d names) where the test has %q (%d): run with -update-fnmatch", fnmatchTable, row[0], len(row[1]), p, len(g.Names))
			}
			m := CompileGlob(p)
			for i, name := range g.Names {
				n++
				if got, want := m.Match(name), row[1][i] == '1'; got != want {
					if bad++; bad <= 20 {
						t.Errorf("%q on %q: %v, fnmatch says %v", p, name, got, want)
					}
				}
			}
		}
	}
	if sc.Scan() {
		t.Fatalf("%s has more rows than the test: run with -update-fnmatch", fnmatchTable)
	}
	if bad > 0 {
		t.Fatalf("%d of %d cases differ from fnmatch", bad, n)
	}
}

// writeFnmatchTable asks python3's fnmatch.fnmatchcase for every case and
// writes the answers: a line per pattern, a JSON array of the pattern and
// a "1" or "0" per name.
func writeFnmatchTable(t *testing.T, groups []globGroup) {
	in, err := json.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	const script = `import fnmatch, json, sys
for g in json.load(sys.stdin):
    for p in g["P"]:
        bits = "".join("1" if fnmatch.fnmatchcase(n, p) else "0" for n in g["N"])
        print(json.dumps([p, bits], ensure_ascii=False))`
	cmd := exec.Command("python3", "-c", script)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(fnmatchTable), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fnmatchTable, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckGlob: the patterns the channel rules refuse, and some they
// keep.
func TestCheckGlob(t *testing.T) {
	for _, c := range []struct {
		pattern string
		ok      bool
	}{
		{"numpy", true},
		{"numpy*", true},
		{"[!m]*", true},
		{"[a-m]*", true},
		{"py?hon", true},
		{"[]]", true},
		{"[a-]*", true},
		{"", true},
		{"[", false},
		{"numpy[", false},
		{"[!m", false},
		{"[!]", false},
		{"[z-a]*", false},
		{"[!c-ab]", false},
		{"ok*[z-a]", false},
	} {
		err := CheckGlob(c.pattern)
		if (err == nil) != c.ok {
			t.Errorf("CheckGlob(%q) = %v, want ok=%v", c.pattern, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadGlob) {
			t.Errorf("CheckGlob(%q) = %v, not ErrBadGlob", c.pattern, err)
		}
	}
}

// slowMatch matches by trying every split at each star: the definition
// Match's single backtrack point must agree with.
func slowMatch(toks []globTok, name []rune) bool {
	if len(toks) == 0 {
		return len(name) == 0
	}
	if toks[0].kind == globStar {
		for i := 0; i <= len(name); i++ {
			if slowMatch(toks[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	return len(name) > 0 && toks[0].matches(name[0]) && slowMatch(toks[1:], name[1:])
}

// FuzzGlob holds Match to the exhaustive matcher, and checks that a
// pattern without special characters matches exactly itself and that what
// CheckGlob accepts has every '[' closed.
func FuzzGlob(f *testing.F) {
	for _, s := range []string{"[!m]*", "numpy*", "*a*b*c", "[a-z-]", "[]]", "[", "[z-a!]", "?é*", "[!c-ab-d]x*"} {
		f.Add(s, "numpy-1.26.4-py312h8753938_0.conda")
		f.Add(s, "mkl")
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern) > 64 || len(name) > 64 || !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			return
		}
		g := CompileGlob(pattern)
		got := g.Match(name)
		if want := slowMatch(g.toks, []rune(name)); got != want {
			t.Fatalf("%q on %q: Match %v, exhaustive %v", pattern, name, got, want)
		}
		if !HasGlobMeta(pattern) && got != (pattern == name) {
			t.Fatalf("plain %q on %q: %v", pattern, name, got)
		}
		if !HasGlobMeta(pattern) && !CompileGlob(pattern).Match(pattern) {
			t.Fatalf("plain %q does not match itself", pattern)
		}
		if CheckGlob(pattern) == nil && strings.Count(pattern, "[") > 0 {
			for _, tok := range g.toks {
				if tok.kind == globLit && tok.r == '[' {
					t.Fatalf("CheckGlob accepted %q with an unclosed '['", pattern)
				}
			}
		}
	})
}
