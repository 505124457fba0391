package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// cli runs one command line in-process against n.
func cli(t *testing.T, n *nodetest.Node, args ...string) (string, string, int) {
	t.Helper()
	t.Setenv("CONDAMESH_SERVER", n.URL())
	t.Setenv("CONDAMESH_API_KEY", nodetest.AdminKey)
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestClientCommands(t *testing.T) {
	n := nodetest.Start(t)
	dir := t.TempDir()
	spec := condatest.Spec{Name: "clipkg", Version: "1.0", Build: "0", Files: map[string]string{"x": "y"}}
	pkg := filepath.Join(dir, condatest.Filename(spec, ".conda"))
	if err := os.WriteFile(pkg, condatest.Conda(t, spec), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"channel", "create", "cli-chan", "--description", "from the CLI"}, 0, "created channel cli-chan"},
		{[]string{"channel", "create", "cli-chan"}, 1, "already_exists"},
		{[]string{"channel", "list"}, 0, "cli-chan"},
		{[]string{"channel", "get", "cli-chan"}, 0, `"description": "from the CLI"`},
		{[]string{"channel", "patch", "cli-chan", "--private"}, 0, `"private": true`},
		{[]string{"upload", "--quiet", "cli-chan", pkg}, 0, "uploaded clipkg-1.0-0.conda"},
		{[]string{"upload", "--quiet", "cli-chan", pkg}, 1, "409"},
		{[]string{"upload", "--quiet", "--force", "cli-chan", pkg}, 0, "uploaded"},
		{[]string{"upload", "--quiet", "missing-chan", pkg}, 1, "Channel missing-chan not found"},
		{[]string{"channel", "list"}, 0, "cli-chan  local  true     1"},
		{[]string{"key", "create", "--description", "ci"}, 0, ""},
		{[]string{"key", "list"}, 0, "ci"},
		{[]string{"channel", "delete", "cli-chan"}, 0, "deleted channel cli-chan"},
		{[]string{"channel", "get", "cli-chan"}, 1, "not_found"},
		{[]string{"channel", "get"}, 1, "accepts 1 arg"},
		{[]string{"channel", "list", "--server", "ftp://x"}, 2, "want http(s)"},
		{[]string{"serve", "--no-such-flag"}, 2, "unknown flag"},
	}
	for _, s := range steps {
		out, errOut, code := cli(t, n, s.args...)
		if code != s.code || !strings.Contains(out+errOut, s.contains) {
			t.Fatalf("condamesh %s: exit %d (want %d), output %q, want it to contain %q", strings.Join(s.args, " "), code, s.code, out+errOut, s.contains)
		}
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"serve", "--http-addr", "not-an-address", "--data-dir", t.TempDir()}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "http address") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	code = run(context.Background(), []string{"serve", "--debug-addr", "nonsense", "--data-dir", t.TempDir()}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "debug address") {
		t.Fatalf("bad --debug-addr: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	code = run(context.Background(), []string{"serve", "--max-upstream-index-size", "-1", "--data-dir", t.TempDir()}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "proxy: config") {
		t.Fatalf("negative --max-upstream-index-size: exit %d, stderr %q", code, errb.String())
	}
	t.Setenv("CONDAMESH_LOG_LEVEL", "loud")
	code = run(context.Background(), []string{"serve", "--data-dir", t.TempDir()}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "--log-level") {
		t.Fatalf("env twin not applied or not reported: exit %d, stderr %q", code, errb.String())
	}
}

func TestMetricsCommand(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.DownloadFlush = 10 * time.Millisecond })
	if _, errOut, code := cli(t, n, "channel", "create", "m-chan"); code != 0 {
		t.Fatal(errOut)
	}
	dir := t.TempDir()
	spec := condatest.Spec{Name: "mpkg", Version: "1.0", Build: "0", Subdir: "linux-64"}
	pkg := filepath.Join(dir, condatest.Filename(spec, ".conda"))
	if err := os.WriteFile(pkg, condatest.Conda(t, spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, n, "upload", "--quiet", "m-chan", pkg); code != 0 {
		t.Fatal(errOut)
	}
	resp, err := http.Get(n.URL() + "/get/m-chan/linux-64/" + filepath.Base(pkg))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %v %v", err, resp)
	}
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := cli(t, n, "metrics", "m-chan")
		if code != 0 {
			t.Fatal(errOut)
		}
		if strings.Contains(out, "linux-64/"+filepath.Base(pkg)) && strings.Contains(out, "  1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics output never showed the download:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, _, code := cli(t, n, "metrics", "--by-mirror", "m-chan")
	if code != 0 || !strings.Contains(out, "this server") || !strings.Contains(out, "total") {
		t.Fatalf("--by-mirror:\n%s", out)
	}
}
