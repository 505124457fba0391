package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun: the same flags write the same bytes; --change alters the
// linux-64 file only; --real writes package files; --shards writes the
// sharded repodata too; bad flags exit 2.
func TestRun(t *testing.T) {
	base := []string{"--records", "3000", "--noarch-records", "600", "--seed", "9"}
	write := func(extra ...string) string {
		t.Helper()
		dir := t.TempDir()
		var out, errb bytes.Buffer
		if code := run(context.Background(), append(append([]string{"--out", dir}, base...), extra...), &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if !strings.Contains(out.String(), "linux-64: 3000 records") || !strings.Contains(out.String(), "noarch: 600 records") {
			t.Fatalf("output %q", out.String())
		}
		return dir
	}
	read := func(dir, subdir string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, subdir, "repodata.json"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := write(), write()
	for _, sd := range []string{"linux-64", "noarch"} {
		if !bytes.Equal(read(a, sd), read(b, sd)) {
			t.Fatalf("%s: two runs with the same flags differ", sd)
		}
	}
	c := write("--change", "linux-64/17")
	if bytes.Equal(read(a, "linux-64"), read(c, "linux-64")) || !bytes.Equal(read(a, "noarch"), read(c, "noarch")) {
		t.Fatal("--change linux-64/17 did not change linux-64 alone")
	}
	d := write("--real", "python,pip")
	pkgs, _ := filepath.Glob(filepath.Join(d, "*", "p*-*.*"))
	if len(pkgs) == 0 {
		t.Fatal("--real wrote no package files")
	}
	e := write("--shards")
	for _, sd := range []string{"linux-64", "noarch"} {
		shards, _ := filepath.Glob(filepath.Join(e, sd, "shards", "*.msgpack.zst"))
		if _, err := os.Stat(filepath.Join(e, sd, "repodata_shards.msgpack.zst")); err != nil || len(shards) == 0 {
			t.Fatalf("--shards: %s has index %v and %d shards", sd, err, len(shards))
		}
	}
	if shards, _ := filepath.Glob(filepath.Join(a, "*", "shards")); len(shards) != 0 {
		t.Fatal("shards written without --shards")
	}
	for _, args := range [][]string{
		{"--records", "10"}, // no --out
		{"--out", t.TempDir(), "--records", "10", "--noarch-records", "0", "--names", "500"}, // more names than records
		{"--out", t.TempDir(), "--change", "linux-64"},                                       // no index
		{"--out", t.TempDir(), "--bogus"},
	} {
		if code := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
