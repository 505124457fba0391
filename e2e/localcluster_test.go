package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// localCluster is a cluster started by deploy/local-cluster.sh in dir.
type localCluster struct {
	t   *testing.T
	dir string
}

// clusterScript runs deploy/local-cluster.sh with args and returns its
// combined output and error.
func clusterScript(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(filepath.Dir(e2eDir), "deploy", "local-cluster.sh")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startLocalCluster runs `local-cluster.sh start n` with the binary the
// tests built, on ports found free, in a temporary directory; the cluster
// is stopped at cleanup if the test has not stopped it.
func startLocalCluster(t *testing.T, n int, extra ...string) *localCluster {
	t.Helper()
	c := &localCluster{t: t, dir: t.TempDir()}
	args := append([]string{"start", strconv.Itoa(n), "--dir", c.dir, "--bin", binPath,
		"--base-port", strconv.Itoa(freeBasePort(t, n))}, extra...)
	out, err := clusterScript(t, args...)
	t.Cleanup(func() {
		if out, err := clusterScript(t, "stop", "--dir", c.dir); err != nil {
			t.Logf("cleanup: local-cluster.sh stop: %v\n%s", err, out)
		}
		if t.Failed() {
			for i := 1; i <= n; i++ {
				b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node%d.log", i)))
				t.Logf("node%d.log:\n%s", i, b)
			}
		}
	})
	if err != nil {
		t.Fatalf("local-cluster.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for i := 1; i <= n; i++ {
		if !strings.Contains(out, fmt.Sprintf("node%d ", i)) {
			t.Fatalf("start printed no line for node%d:\n%s", i, out)
		}
	}
	return c
}

// file is the trimmed content of a file the script wrote in the cluster
// directory.
func (c *localCluster) file(name string) string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (c *localCluster) url(i int) string { return c.file(fmt.Sprintf("node%d.url", i)) }

func (c *localCluster) pid(i int) int {
	c.t.Helper()
	pid, err := strconv.Atoi(c.file(fmt.Sprintf("node%d.pid", i)))
	if err != nil {
		c.t.Fatal(err)
	}
	return pid
}

// freeBasePort finds a base port P for n nodes: each node i's HTTP (P+10i),
// Raft (P+10i+1) and gossip (P+10i+2, TCP and UDP) ports are free now.
func freeBasePort(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base < 1024 || base+10*(n-1)+2 > 65535 {
			continue
		}
		if portsFree(base, n) {
			return base
		}
	}
	t.Fatal("found no free port range")
	return 0
}

func portsFree(base, n int) bool {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	for i := range n {
		for off := range 3 {
			addr := fmt.Sprintf("127.0.0.1:%d", base+10*i+off)
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			closers = append(closers, l.Close)
		}
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", base+10*i+2))
		if err != nil {
			return false
		}
		closers = append(closers, pc.Close)
	}
	return true
}

// processGone reports whether pid has exited (a zombie not yet reaped by
// whoever adopted it counts as exited).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestLocalClusterScript: deploy/local-cluster.sh starts a node (its own
// ports, data directory, log and PID file, the admin key captured), which
// serves /health/live and takes the captured key; stop ends the process
// and removes its PID file; status tells running from stopped.
func TestLocalClusterScript(t *testing.T) {
	c := startLocalCluster(t, 1)
	pid := c.pid(1)
	resp, err := http.Get(c.url(1) + "/health/live")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health/live: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, c.url(1)+"/api/api-keys", nil)
	req.Header.Set("X-API-Key", c.file("admin-key"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the admin key in admin-key is refused: %d", resp.StatusCode)
	}
	if out, err := clusterScript(t, "status", "--dir", c.dir); err != nil || !strings.Contains(out, fmt.Sprintf("running (pid %d), ready", pid)) {
		t.Fatalf("status of a running cluster: %v\n%s", err, out)
	}
	if out, err := clusterScript(t, "start", "1", "--dir", c.dir, "--bin", binPath); err == nil || !strings.Contains(out, "already runs") {
		t.Fatalf("a second start on a running cluster: %v\n%s", err, out)
	}

	if out, err := clusterScript(t, "stop", "--dir", c.dir); err != nil || !strings.Contains(out, "node1 stopped") {
		t.Fatalf("stop: %v\n%s", err, out)
	}
	if !processGone(pid) {
		t.Fatalf("node1 (pid %d) still runs after stop", pid)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "node1.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("node1.pid left behind: %v", err)
	}
	out, err := clusterScript(t, "status", "--dir", c.dir)
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "stopped") {
		t.Fatalf("status of a stopped cluster: %v\n%s", err, out)
	}
}

// TestLocalClusterScriptUsage: bad arguments are usage errors (exit 2)
// that say what is wrong, and nothing is started.
func TestLocalClusterScriptUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"launch"}, "unknown command launch"},
		{[]string{"start"}, "how many nodes"},
		{[]string{"start", "0", "--dir", dir}, "want a number from 1"},
		{[]string{"start", "3", "--dir", dir, "--base-port", "65530"}, "--base-port 65530"},
		{[]string{"start", "1", "--dir", dir, "--sites", "a,b c"}, "bad site name"},
		{[]string{"start", "1", "--dir", dir, "--frobnicate"}, "unknown option --frobnicate"},
		{[]string{"stop", "--dir", dir, "--stop-timeout", "soon"}, "want whole seconds"},
	} {
		out, err := clusterScript(t, tc.args...)
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, tc.want) {
			t.Errorf("local-cluster.sh %s: %v, want exit 2 saying %q:\n%s", strings.Join(tc.args, " "), err, tc.want, out)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused start left files in its directory: %v", entries)
	}
}
