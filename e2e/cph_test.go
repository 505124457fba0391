package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// makeWithCph writes a package tree by hand (no condamesh code involved) and
// packs it with Debian's cph into out (a .conda or .tar.bz2 file name).
func makeWithCph(t *testing.T, dir, out string, index map[string]any, payload map[string]string) []byte {
	t.Helper()
	root := filepath.Join(dir, "tree-"+out)
	files := []string{}
	write := func(rel string, data []byte) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	paths := []map[string]any{}
	for rel, content := range payload {
		write(rel, []byte(content))
		files = append(files, rel)
		paths = append(paths, map[string]any{"_path": rel, "path_type": "hardlink", "sha256": sha256Hex([]byte(content)), "size_in_bytes": len(content)})
	}
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	write("info/index.json", js(index))
	write("info/about.json", js(map[string]any{"summary": "made with cph", "license": "MIT"}))
	write("info/paths.json", js(map[string]any{"paths": paths, "paths_version": 1}))
	list := ""
	for _, f := range files {
		list += f + "\n"
	}
	write("info/files", []byte(list))
	outDir := filepath.Join(dir, "out")
	_ = os.MkdirAll(outDir, 0o755)
	cmd := exec.Command("cph", "c", root, out, "--out-folder", outDir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cph c %s: %v: %s", out, err, b)
	}
	b, err := os.ReadFile(filepath.Join(outDir, out))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPackagesMadeByCph checks that packages made by independent tooling
// (conda-package-handling) are accepted, indexed, solved by rattler and
// served byte-identical, and that what is served extracts with cph again.
func TestPackagesMadeByCph(t *testing.T) {
	if _, err := exec.LookPath("cph"); err != nil {
		t.Fatalf("cph is required (make deps installs Debian's conda-package-handling): %v", err)
	}
	dir := t.TempDir()
	app := makeWithCph(t, dir, "app-2.1-py_0.conda", map[string]any{
		"name": "app", "version": "2.1", "build": "py_0", "build_number": 0, "subdir": "noarch", "noarch": "generic",
		"depends": []string{"libthing >=1.2"}, "license": "MIT", "timestamp": 1700000000000,
	}, map[string]string{"share/app/README": "app\n"})
	lib := makeWithCph(t, dir, "libthing-1.2-h1_0.tar.bz2", map[string]any{
		"name": "libthing", "version": "1.2", "build": "h1_0", "build_number": 0, "subdir": "linux-64", "arch": "x86_64", "platform": "linux",
		"depends": []string{}, "license": "MIT", "timestamp": 1700000000000,
	}, map[string]string{"lib/libthing.so": "ELF-ish\n"})

	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", `{"name":"cph","private":false}`)
	if code, body := s.uploadMultipart("cph", map[string][]byte{"app-2.1-py_0.conda": app, "libthing-1.2-h1_0.tar.bz2": lib}); code != 201 {
		t.Fatalf("upload cph-made packages: %d %s", code, body)
	}
	sol, err := solve(t, []string{"app"}, []string{s.url + "/get/cph"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"app-2.1-py_0.conda": app, "libthing-1.2-h1_0.tar.bz2": lib}
	if len(sol) != 2 {
		t.Fatalf("solved %+v, want app and libthing", sol)
	}
	for _, p := range sol {
		body := download(t, p.URL)
		if string(body) != string(want[p.Filename]) || sha256Hex(body) != p.SHA256 {
			t.Fatalf("%s: served bytes differ from the cph-made file", p.Filename)
		}
		got := filepath.Join(dir, "dl", p.Filename)
		_ = os.MkdirAll(filepath.Dir(got), 0o755)
		if err := os.WriteFile(got, body, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("cph", "x", got, "--dest", filepath.Join(dir, "x-"+p.Name))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cph x of the served %s: %v: %s", p.Filename, err, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x-app", "share", "app", "README")); err != nil {
		t.Fatalf("extracted app lacks its payload: %v", err)
	}
}
