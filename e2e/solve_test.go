package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

// testPackages is a small channel with dependencies across subdirs and both
// archive formats: foo (noarch) -> bar >=2 (noarch) -> baz (per platform).
func testPackages(t *testing.T) map[string][]byte {
	specs := []struct {
		s   condatest.Spec
		ext string
	}{
		{condatest.Spec{Name: "foo", Version: "1.0", Build: "0", Noarch: "generic", Depends: []string{"bar >=2"}, Files: map[string]string{"share/foo.txt": "foo\n"}}, ".tar.bz2"},
		{condatest.Spec{Name: "bar", Version: "2.0", Build: "0", Noarch: "generic", Depends: []string{"baz"}, Files: map[string]string{"share/bar.txt": "bar 2\n"}}, ".conda"},
		{condatest.Spec{Name: "bar", Version: "1.0", Build: "0", Noarch: "generic", Files: map[string]string{"share/bar.txt": "bar 1\n"}}, ".tar.bz2"},
		{condatest.Spec{Name: "baz", Version: "1.0", Build: "h0", Subdir: "linux-64", Files: map[string]string{"lib/baz.so": "linux\n"}}, ".conda"},
		{condatest.Spec{Name: "baz", Version: "1.0", Build: "h0", Subdir: "osx-arm64", Files: map[string]string{"lib/baz.dylib": "mac\n"}}, ".tar.bz2"},
		{condatest.Spec{Name: "baz", Version: "0.9", Build: "h0", Subdir: "linux-64", Files: map[string]string{"lib/baz.so": "old\n"}}, ".tar.bz2"},
	}
	out := map[string][]byte{}
	for _, p := range specs {
		var b []byte
		if p.ext == ".conda" {
			b = condatest.Conda(t, p.s)
		} else {
			b = condatest.TarBz2(t, p.s)
		}
		sub := p.s.Subdir
		if sub == "" {
			sub = "noarch"
		}
		out[sub+"/"+condatest.Filename(p.s, p.ext)] = b
	}
	return out
}

// TestSolveAndDownload uploads a channel through the CLI and the multipart
// REST route, then solves with rattler for two platforms and downloads every
// solved URL, checking each file's sha256 against the solver's record and
// the uploaded bytes.
func TestSolveAndDownload(t *testing.T) {
	for _, m := range httpModes {
		t.Run(m.name, func(t *testing.T) { testSolveAndDownload(t, m.args...) })
	}
}

func testSolveAndDownload(t *testing.T, serveArgs ...string) {
	s := startServerArgs(t, t.TempDir(), serveArgs...)
	if out, err := s.cli("channel", "create", "e2e", "--description", "end to end"); err != nil {
		t.Fatalf("channel create: %v: %s", err, out)
	}
	pkgs := testPackages(t)
	dir := t.TempDir()
	var cliFiles []string
	multi := map[string][]byte{}
	for path, b := range pkgs {
		name := filepath.Base(path)
		if strings.HasSuffix(name, ".conda") {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			cliFiles = append(cliFiles, p)
		} else {
			multi[name] = b
		}
	}
	sort.Strings(cliFiles)
	if out, err := s.cli(append([]string{"upload", "--quiet", "e2e"}, cliFiles...)...); err != nil {
		t.Fatalf("upload: %v: %s", err, out)
	}
	if code, body := s.uploadMultipart("e2e", multi); code != 201 {
		t.Fatalf("multipart upload: %d %s", code, body)
	}

	cases := []struct {
		platform string
		want     map[string]string // name -> version
		bazFile  string
	}{
		{"linux-64", map[string]string{"foo": "1.0", "bar": "2.0", "baz": "1.0"}, "linux-64/baz-1.0-h0.conda"},
		{"osx-arm64", map[string]string{"foo": "1.0", "bar": "2.0", "baz": "1.0"}, "osx-arm64/baz-1.0-h0.tar.bz2"},
	}
	for _, tc := range cases {
		t.Run(tc.platform, func(t *testing.T) {
			sol, err := solve(t, []string{"foo"}, []string{s.url + "/get/e2e"}, []string{tc.platform, "noarch"})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, p := range sol {
				got[p.Name] = p.Version
				body := download(t, p.URL)
				if sha256Hex(body) != p.SHA256 {
					t.Errorf("%s: downloaded sha256 %s, solver expected %s", p.URL, sha256Hex(body), p.SHA256)
				}
				want, ok := pkgs[p.Subdir+"/"+p.Filename]
				if !ok || !bytes.Equal(body, want) {
					t.Errorf("%s: bytes differ from the uploaded %s/%s", p.URL, p.Subdir, p.Filename)
				}
				if p.Name == "baz" && p.Subdir+"/"+p.Filename != tc.bazFile {
					t.Errorf("baz resolved to %s/%s, want %s", p.Subdir, p.Filename, tc.bazFile)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("solved %v, want %v", got, tc.want)
			}
			for n, v := range tc.want {
				if got[n] != v {
					t.Errorf("%s: solved version %q, want %q", n, got[n], v)
				}
			}
		})
	}
}

// TestPrivateChannelWithToken solves a private channel through /t/<key>/
// URLs, the way conda clients pass tokens, and checks anonymous access is
// refused.
func TestPrivateChannelWithToken(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", `{"name":"secret","private":true}`)
	pkgs := testPackages(t)
	multi := map[string][]byte{}
	for path, b := range pkgs {
		multi[filepath.Base(path)] = b
	}
	if code, body := s.uploadMultipart("secret", multi); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, _ := s.do("GET", "/get/secret/noarch/repodata.json", "", nil); code != 401 {
		t.Fatalf("anonymous read of a private channel: %d, want 401", code)
	}
	if _, err := solve(t, []string{"foo"}, []string{s.url + "/get/secret"}, []string{"linux-64", "noarch"}); err == nil {
		t.Fatal("anonymous solve of a private channel succeeded")
	}
	sol, err := solve(t, []string{"foo"}, []string{s.url + "/t/" + adminKey + "/get/secret"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	if len(sol) != 3 {
		t.Fatalf("solved %d packages, want 3", len(sol))
	}
	for _, p := range sol {
		if !strings.Contains(p.URL, "/t/"+adminKey+"/") {
			t.Fatalf("solved URL lost the token: %s", p.URL)
		}
		if body := download(t, p.URL); sha256Hex(body) != p.SHA256 {
			t.Fatalf("%s: sha256 mismatch", p.Filename)
		}
	}
}
