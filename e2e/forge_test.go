package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/forgegen"
)

// forgeChannel writes a generated conda-forge-like channel (forgegen)
// under nginx's root at path, and returns it.
func forgeChannel(tb testing.TB, ng *nginx, path string, cfg forgegen.Config) *forgegen.Channel {
	tb.Helper()
	ch, err := forgegen.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := ch.WriteDir(context.Background(), filepath.Join(ng.root, path)); err != nil {
		tb.Fatal(err)
	}
	return ch
}

// forgeWithPyExt writes a generated channel like forgeChannel, with real
// package files for one of its Python extension names, and returns the
// channel and that name.
func forgeWithPyExt(tb testing.TB, ng *nginx, path string, cfg forgegen.Config) (*forgegen.Channel, string) {
	tb.Helper()
	probe, err := forgegen.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	name := pyExtName(tb, probe)
	cfg.Real = []string{name}
	return forgeChannel(tb, ng, path, cfg), name
}

// pyExtName returns a linux-64 name of ch whose builds are Python
// extensions (py3XXh..._N).
func pyExtName(tb testing.TB, ch *forgegen.Channel) string {
	tb.Helper()
	for _, name := range ch.Names("linux-64") {
		recs, err := ch.NameRecords("linux-64", name)
		if err != nil {
			tb.Fatal(err)
		}
		if name != "numpy" && name != "pyyaml" && strings.HasPrefix(recs[0].Build, "py3") && len(recs[0].Depends) > 3 {
			return name
		}
	}
	tb.Fatal("no Python extension name in the generated channel")
	return ""
}

// TestForgeChannelSolves: rattler reads a generated channel straight from
// nginx and solves a Python extension of it, with python, python_abi and
// its other dependencies; the solved record of a real package (--real)
// carries the sha256 of the file nginx serves.
func TestForgeChannelSolves(t *testing.T) {
	ng := startNginx(t)
	_, name := forgeWithPyExt(t, ng, "forge", forgegen.Config{Seed: 11, Records: 3000, NoarchRecords: 600})
	sol, err := solve(t, []string{name}, []string{ng.url + "/forge"}, []string{"linux-64", "noarch"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]solved{}
	for _, p := range sol {
		got[p.Name] = p
	}
	for _, want := range []string{name, "python", "python_abi"} {
		if _, ok := got[want]; !ok {
			t.Fatalf("solution %v lacks %s", sol, want)
		}
	}
	p := got[name]
	if body := download(t, p.URL); sha256Hex(body) != p.SHA256 || int64(len(body)) != p.Size {
		t.Fatalf("%s: the file nginx serves does not match its record", p.Filename)
	}
}
