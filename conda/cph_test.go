// Interoperability with conda-package-handling's cph tool (Debian package
// conda-package-handling, installed by make test / scripts/install-test-deps.sh).
// The test fails, rather than skips, when cph is missing.

package conda

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

func cphPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("cph")
	if err != nil {
		t.Fatalf("cph not installed (apt-get install conda-package-handling): %v", err)
	}
	return p
}

func runCph(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(cphPath(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cph %v: %v\n%s", args, err, out)
	}
}

// TestCphExtract checks that cph extracts condatest-built packages and
// that the extracted files are the ones written.
func TestCphExtract(t *testing.T) {
	s := testSpec()
	for _, ext := range []string{ExtConda, ExtTarBz2} {
		t.Run(ext, func(t *testing.T) {
			dir := t.TempDir()
			fn := condatest.Filename(s, ext)
			if err := os.WriteFile(filepath.Join(dir, fn), build(t, s, ext), 0o644); err != nil {
				t.Fatal(err)
			}
			runCph(t, dir, "x", fn, "--dest", "out")
			idx, err := os.ReadFile(filepath.Join(dir, "out", "info", "index.json"))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(idx, &m); err != nil || m["name"] != s.Name || m["version"] != s.Version {
				t.Fatalf("index.json = %s (%v)", idx, err)
			}
			for p, want := range s.Files {
				got, err := os.ReadFile(filepath.Join(dir, "out", filepath.FromSlash(p)))
				if err != nil || string(got) != want {
					t.Errorf("%s = %q, %v", p, got, err)
				}
			}
			for _, f := range []string{"about.json", "paths.json", "files", "run_exports.json"} {
				if _, err := os.Stat(filepath.Join(dir, "out", "info", f)); err != nil {
					t.Errorf("info/%s: %v", f, err)
				}
			}
		})
	}
}

// TestCphCreate checks that ReadPackage reads, and VerifyPackage accepts,
// packages made by cph itself, in both formats.
func TestCphCreate(t *testing.T) {
	s := testSpec()
	dir := t.TempDir()
	fn := condatest.Filename(s, ExtConda)
	if err := os.WriteFile(filepath.Join(dir, fn), condatest.Conda(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
	runCph(t, dir, "x", fn, "--dest", "prefix")
	if err := os.Mkdir(filepath.Join(dir, "made"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{ExtConda, ExtTarBz2} {
		t.Run(ext, func(t *testing.T) {
			out := condatest.Filename(s, ext)
			runCph(t, dir, "c", "prefix", out, "--out-folder", "made")
			b, err := os.ReadFile(filepath.Join(dir, "made", out))
			if err != nil {
				t.Fatal(err)
			}
			info, err := ReadPackage(bytes.NewReader(b), int64(len(b)), out)
			if err != nil {
				t.Fatalf("ReadPackage(cph-made %s): %v", out, err)
			}
			if _, err := VerifyPackage(bytes.NewReader(b), int64(len(b)), out, VerifyOptions{}); err != nil {
				t.Fatalf("VerifyPackage(cph-made %s): %v", out, err)
			}
			if info.Index["name"] != s.Name || info.About["summary"] != "A demo" || info.RunExports == nil {
				t.Errorf("info = %+v", info)
			}
			d, _ := HashReader(bytes.NewReader(b))
			r := NewRecord(info, d)
			if r.Subdir != "linux-64" || r.Fields["size"] != int64(len(b)) {
				t.Errorf("record = %+v", r)
			}
		})
	}
}
