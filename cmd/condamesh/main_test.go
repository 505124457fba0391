package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda"
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
		{[]string{"upload", "cli-chan", pkg}, 0, "uploaded clipkg-1.0-0.conda"},
		{[]string{"upload", "--quiet", "cli-chan", pkg}, 1, "409"},
		{[]string{"upload", "--force", "cli-chan", pkg}, 0, "uploaded"},
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
	pkg := uploadAndDownload(t, n, "m-chan", "mpkg")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := cli(t, n, "metrics", "m-chan")
		if code != 0 {
			t.Fatal(errOut)
		}
		if strings.Contains(out, "linux-64/"+pkg) && strings.Contains(out, "  1") {
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

// uploadAndDownload uploads a linux-64 package NAME-1.0-0.conda to
// channel with the CLI and downloads it once; it returns the file name.
func uploadAndDownload(t *testing.T, n *nodetest.Node, channel, name string) string {
	t.Helper()
	spec := condatest.Spec{Name: name, Version: "1.0", Build: "0", Subdir: "linux-64"}
	pkg := filepath.Join(t.TempDir(), condatest.Filename(spec, ".conda"))
	if err := os.WriteFile(pkg, condatest.Conda(t, spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, n, "upload", "--quiet", channel, pkg); code != 0 {
		t.Fatal(errOut)
	}
	resp, err := http.Get(n.URL() + "/get/" + channel + "/linux-64/" + filepath.Base(pkg))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download: %v %v", err, resp)
	}
	resp.Body.Close()
	return filepath.Base(pkg)
}

// TestNoProgressBarsWhenPiped: with stderr not a terminal (a pipe, a log
// file), upload and sync --wait draw no bar (no carriage returns, no
// redraws) and print a line per file instead, each once; with -q they
// print nothing unless something fails, and failures go to stderr.
func TestNoProgressBarsWhenPiped(t *testing.T) {
	n := nodetest.Start(t)
	dir := t.TempDir()
	var pkgs []string
	files := map[string][]byte{} // noarch file name -> bytes, for the upstream below
	for i := range 3 {
		spec := condatest.Spec{Name: "pipedpkg", Version: fmt.Sprintf("1.%d", i), Build: "0", Files: map[string]string{"x": strings.Repeat("y", 1<<20)}}
		fn := condatest.Filename(spec, ".conda")
		files[fn] = condatest.Conda(t, spec)
		pkgs = append(pkgs, filepath.Join(dir, fn))
		if err := os.WriteFile(pkgs[i], files[fn], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noBars := func(t *testing.T, out, errOut string) {
		t.Helper()
		if strings.ContainsAny(out+errOut, "\r\x1b") || strings.Contains(errOut, "%") {
			t.Fatalf("a progress bar was drawn into a pipe: stdout %q, stderr %q", out, errOut)
		}
	}
	if _, _, code := cli(t, n, "channel", "create", "piped"); code != 0 {
		t.Fatal("create")
	}

	t.Run("upload", func(t *testing.T) {
		out, errOut, code := cli(t, n, "upload", "piped", pkgs[0], pkgs[1])
		noBars(t, out, errOut)
		if want := "uploaded pipedpkg-1.0-0.conda\nuploaded pipedpkg-1.1-0.conda\n"; code != 0 || out != want || errOut != "" {
			t.Fatalf("upload: exit %d, stdout %q (want %q), stderr %q", code, out, want, errOut)
		}
	})
	t.Run("upload -q", func(t *testing.T) {
		if out, errOut, code := cli(t, n, "upload", "-q", "piped", pkgs[2]); code != 0 || out != "" || errOut != "" {
			t.Fatalf("upload -q: exit %d, stdout %q, stderr %q: want nothing", code, out, errOut)
		}
		out, errOut, code := cli(t, n, "upload", "-q", "piped", pkgs[2])
		if code == 0 || out != "" || !strings.Contains(errOut, "pipedpkg-1.2-0.conda") || !strings.Contains(errOut, "409") {
			t.Fatalf("upload -q of a duplicate: exit %d, stdout %q, stderr %q: want the error on stderr", code, out, errOut)
		}
	})

	// An upstream with two channels: ok lists the three files, bad lists
	// them and one more that is missing.
	const missing = "pipedpkg-9.9-0.conda"
	recs := func(extra bool) []byte {
		var rs []conda.Record
		for fn, data := range files {
			rs = append(rs, pipedRecord(fn, data))
		}
		if extra {
			rs = append(rs, pipedRecord(missing, []byte("gone")))
		}
		return conda.Repodata("noarch", rs)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch, p, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch {
		case p == "channeldata.json":
			_, _ = w.Write([]byte(`{"subdirs":["noarch"]}`))
		case p == "noarch/repodata.json":
			_, _ = w.Write(recs(ch == "bad"))
		case strings.HasPrefix(p, "noarch/") && files[strings.TrimPrefix(p, "noarch/")] != nil:
			_, _ = w.Write(files[strings.TrimPrefix(p, "noarch/")])
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(up.Close)
	for _, ch := range []string{"ok", "bad"} {
		for _, mode := range []string{"piped", "quiet"} {
			name := "mirror-" + ch + "-" + mode
			if _, errOut, code := cli(t, n, "channel", "create", name, "--mirror-url", up.URL+"/"+ch, "--mode", "mirror", "--no-sync"); code != 0 {
				t.Fatalf("create %s: %s", name, errOut)
			}
		}
	}
	failedLine := regexp.MustCompile(`(?m)^failed noarch/` + regexp.QuoteMeta(missing) + `: `)

	t.Run("sync --wait", func(t *testing.T) {
		out, errOut, code := cli(t, n, "channel", "sync", "mirror-bad-piped", "--wait")
		noBars(t, out, errOut)
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d, stderr %q", code, errOut)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		seen := map[string]bool{}
		for _, l := range lines {
			if seen[l] {
				t.Errorf("line %q printed twice:\n%s", l, out)
			}
			seen[l] = true
		}
		if got := len(failedLine.FindAllString(out, -1)); got != 1 {
			t.Errorf("%d lines for the file that failed, want 1:\n%s", got, out)
		}
		for _, want := range []string{"started job ", "task ", "4/4 files", "; 1 errors", " succeeded"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("sync --wait -q", func(t *testing.T) {
		if out, errOut, code := cli(t, n, "channel", "sync", "mirror-ok-quiet", "--wait", "-q"); code != 0 || out != "" || errOut != "" {
			t.Fatalf("a clean sync: exit %d, stdout %q, stderr %q: want nothing", code, out, errOut)
		}
		out, errOut, code := cli(t, n, "channel", "sync", "mirror-bad-quiet", "--wait", "-q")
		noBars(t, out, errOut)
		if code != 0 || out != "" || len(failedLine.FindAllString(errOut, -1)) != 1 || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("a sync with a failed file: exit %d, stdout %q, stderr %q: want one line, for the file", code, out, errOut)
		}
	})
}

// pipedRecord is a noarch repodata record of a package file.
func pipedRecord(fn string, data []byte) conda.Record {
	sum, md := sha256.Sum256(data), md5.Sum(data)
	name, rest, _ := strings.Cut(fn, "-")
	version, _, _ := strings.Cut(rest, "-")
	return conda.Record{Filename: fn, Subdir: "noarch", Fields: map[string]any{
		"name": name, "version": version, "build": "0", "build_number": int64(0), "depends": []any{},
		"subdir": "noarch", "sha256": hex.EncodeToString(sum[:]), "md5": hex.EncodeToString(md[:]), "size": int64(len(data)),
	}}
}

// TestServeLeanHTTPSwitch: --lean-http and its CONDAMESH_LEAN_HTTP twin
// reach the node, which logs whether its lean HTTP/1.1 loop serves.
func TestServeLeanHTTPSwitch(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"default", nil, "", "lean_http=true"},
		{"flag", []string{"--lean-http=false"}, "", "lean_http=false"},
		{"env twin", nil, "false", "lean_http=false"},
		{"flag over env twin", []string{"--lean-http=true"}, "false", "lean_http=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("CONDAMESH_LEAN_HTTP", tc.env)
			}
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0",
				"--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"}, tc.args...)
			_, logs := serveUntilServing(t, args)
			if !strings.Contains(logs, tc.want) {
				t.Errorf("log lacks %q:\n%s", tc.want, logs)
			}
		})
	}
}

// serveUntilServing runs args (a serve command line) until it prints its
// serving banner, then stops it; it returns the banner and the logs. A
// serve that exits before serving, or with an error, fails the test.
func serveUntilServing(t *testing.T, args []string) (banner, logs string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // not serving by then: fail
	defer cancel()
	out, outW := io.Pipe()
	var errb bytes.Buffer // read once run has returned
	done := make(chan int, 1)
	go func() {
		code := run(ctx, args, outW, &errb)
		outW.Close()
		done <- code
	}()
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if strings.Contains(sc.Text(), "condamesh serving on") && banner == "" {
			banner = sc.Text()
			cancel()
		}
	}
	if code := <-done; banner == "" || code != 0 {
		t.Fatalf("serve exited with %d (banner: %q):\n%s", code, banner, errb.String())
	}
	return banner, errb.String()
}

// TestAdminRestoreOwner runs the break-glass command on a real data
// directory: refused while the node runs; with the node stopped it makes
// an existing user owner (with a new key) and creates a missing one; the
// restarted node serves both as owners.
func TestAdminRestoreOwner(t *testing.T) {
	n := nodetest.Start(t)
	api := func(n *nodetest.Node, method, path, key, body string) (int, string) {
		req, _ := http.NewRequest(method, n.URL()+path, strings.NewReader(body))
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := api(n, "POST", "/api/users", nodetest.AdminKey, `{"username":"ops","role":"maintainer"}`); code != 201 {
		t.Fatalf("create ops: %d %s", code, body)
	}
	restore := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"admin", "restore-owner", "--data-dir", n.Dir}, args...), &out, &errb)
		return out.String(), errb.String(), code
	}
	if out, errOut, code := restore("ops"); code != 1 {
		t.Fatalf("restore-owner on a running node's data dir: exit %d\n%s%s", code, out, errOut)
	}
	n.Stop()
	keyRe := regexp.MustCompile(`(?m)^    (\S{32})$`)
	out, errOut, code := restore("--new-key", "ops")
	m := keyRe.FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, `user "ops" has the server role owner`) {
		t.Fatalf("restore-owner ops: exit %d\n%s%s", code, out, errOut)
	}
	opsKey := m[1]
	out, errOut, code = restore("rescue")
	m = keyRe.FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, `created user "rescue"`) {
		t.Fatalf("restore-owner rescue: exit %d\n%s%s", code, out, errOut)
	}
	rescueKey := m[1]
	if _, errOut, code := restore(); code != 1 || !strings.Contains(errOut, "accepts 1 arg") {
		t.Fatalf("restore-owner without a user: exit %d %s", code, errOut)
	}
	// A key secret that is not the node's (here: none at the given path) is
	// refused rather than created: the key printed would not log in.
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if out, errOut, code := restore("--api-key-secret-file", moved, "ops"); code != 1 || !strings.Contains(errOut, "no API key secret") {
		t.Fatalf("restore-owner with a missing key secret: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(moved); err == nil {
		t.Fatal("restore-owner created a new key secret")
	}

	n = n.Restart(t)
	for user, key := range map[string]string{"ops": opsKey, "rescue": rescueKey} {
		if code, body := api(n, "GET", "/api/users/"+user+"/role", key, ""); code != 200 || !strings.Contains(body, `"owner"`) {
			t.Fatalf("%s after restore-owner: %d %s", user, code, body)
		}
	}
	// The restored owner has an owner's powers: it demotes the other one.
	if code, body := api(n, "PUT", "/api/users/rescue/role", opsKey, `{"role":"member"}`); code != 200 {
		t.Fatalf("restored owner demotes another owner: %d %s", code, body)
	}
}
