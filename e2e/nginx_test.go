package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nginx runs Debian's nginx serving root on a loopback port.
type nginx struct {
	url  string
	cmd  *exec.Cmd
	root string
	log  string
}

// requests returns the access log lines ("status method uri") so far.
func (n *nginx) requests(tb testing.TB) []string {
	b, err := os.ReadFile(n.log)
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// count returns how many logged requests were for uri.
func (n *nginx) count(tb testing.TB, uri string) int {
	c := 0
	for _, l := range n.requests(tb) {
		if strings.HasSuffix(l, " "+uri) {
			c++
		}
	}
	return c
}

// stop takes nginx down: SIGTERM makes the master stop its workers (a
// SIGKILL of the master would leave them serving).
func (n *nginx) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = n.cmd.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
	}
}

func startNginx(tb testing.TB) *nginx { return startNginxLogged(tb, false) }

// startNginxLogged starts nginx; with logged, every request is appended to
// an access log that requests() reads.
func startNginxLogged(tb testing.TB, logged bool) *nginx {
	tb.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		tb.Fatalf("nginx is required (make deps installs it): %v", err)
	}
	dir := tb.TempDir()
	root := filepath.Join(dir, "root")
	_ = os.MkdirAll(root, 0o755)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	accessLog := "access_log off;"
	if logged {
		accessLog = "log_format paths '$status $request_method $uri'; access_log " + filepath.Join(dir, "access.log") + " paths;"
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`%s
worker_processes auto;
error_log %[2]s/error.log warn;
pid %[2]s/nginx.pid;
events { worker_connections 4096; }
http {
  %[5]s
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  server { listen %[3]s; root %[4]s; }
}
`, user, dir, addr, root, accessLog)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("nginx", "-p", dir, "-c", cf, "-g", "daemon off;")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	n := &nginx{url: "http://" + addr, cmd: cmd, root: root, log: filepath.Join(dir, "access.log")}
	tb.Cleanup(n.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get(n.url + "/"); err == nil {
			resp.Body.Close()
			return n
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nginx did not start: %s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *nginx) put(tb testing.TB, rel string, data []byte) {
	p := filepath.Join(n.root, rel)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}
