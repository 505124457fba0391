package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binPath  string // the condamesh binary built by TestMain
	e2eDir   string // this directory (package.json, solve.cjs)
	adminKey = "e2e-admin-key-0123456789abcdef"
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	e2eDir = filepath.Dir(file)
	tmp, err := os.MkdirTemp("", "condamesh-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(tmp, "condamesh")
	build := exec.Command("go", "build", "-o", binPath, "./cmd/condamesh")
	build.Dir = filepath.Dir(e2eDir)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build condamesh:", err)
		os.Exit(1)
	}
	if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", "@conda-org", "rattler")); err != nil {
		install := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		install.Dir = e2eDir
		install.Stdout, install.Stderr = os.Stderr, os.Stderr
		if err := install.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "npm ci (installs the rattler conda client):", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(tmp)
	os.Exit(code)
}

// server is a running condamesh process.
type server struct {
	t       testing.TB
	dataDir string
	url     string
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var servingRe = regexp.MustCompile(`condamesh serving on (http://\S+)`)

// startServer runs `condamesh serve` on ephemeral loopback ports with
// dataDir, waits until it is ready and returns it. The process is killed at
// test cleanup if still running.
func startServer(t testing.TB, dataDir string) *server {
	t.Helper()
	return startServerArgs(t, dataDir)
}

// httpModes are the two ways a server answers HTTP, as serve flags: the
// lean HTTP/1.1 loop for conda clients' reads (the default), or net/http
// for everything.
var httpModes = []struct {
	name string
	args []string
}{
	{"lean-http", nil},
	{"net-http", []string{"--lean-http=false"}},
}

// startServerArgs is startServer with extra serve flags.
func startServerArgs(t testing.TB, dataDir string, extra ...string) *server {
	t.Helper()
	args := append([]string{"serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--log-level", "info"}, extra...)
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "CONDAMESH_ADMIN_KEY="+adminKey)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, dataDir: dataDir, cmd: cmd, logs: logs, exited: make(chan struct{})}
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			logs.Write([]byte("stdout: " + sc.Text() + "\n"))
			if m := servingRe.FindStringSubmatch(sc.Text()); m != nil {
				urlCh <- m[1]
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("server logs:\n%s", logs.String())
		}
	})
	select {
	case s.url = <-urlCh:
	case <-s.exited:
		t.Fatalf("server exited before serving:\n%s", logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("server not serving after 60s:\n%s", logs.String())
	}
	waitFor(t, 30*time.Second, "server ready", func() bool {
		resp, err := http.Get(s.url + "/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

// kill sends SIGKILL: no graceful shutdown, like a crash or power loss.
func (s *server) kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.exited
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Fatalf("server did not stop within 30s of SIGTERM")
	}
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// do sends a request with the admin key (or key if not empty) and returns
// status and body.
func (s *server) do(method, path, key string, body io.Reader, header ...string) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (s *server) mustDo(want int, method, path string, body string) []byte {
	s.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	code, b := s.do(method, path, adminKey, r)
	if code != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, code, want, b)
	}
	return b
}

// uploadMultipart posts files to /api/channels/{c}/files/.
func (s *server) uploadMultipart(channel string, files map[string][]byte) (int, []byte) {
	s.t.Helper()
	return s.uploadMultipartKey(channel, adminKey, files)
}

// uploadMultipartKey is uploadMultipart with the API key given.
func (s *server) uploadMultipartKey(channel, key string, files map[string][]byte) (int, []byte) {
	s.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for name, data := range files {
		w, _ := mw.CreateFormFile("files", name)
		_, _ = w.Write(data)
	}
	_ = mw.Close()
	return s.do("POST", "/api/channels/"+channel+"/files/", key, &buf, "Content-Type", mw.FormDataContentType())
}

// cli runs a condamesh client command against s.
func (s *server) cli(args ...string) (string, error) {
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "CONDAMESH_SERVER="+s.url, "CONDAMESH_API_KEY="+adminKey)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type solved struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Build    string `json:"build"`
	Filename string `json:"filename"`
	URL      string `json:"url"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Subdir   string `json:"subdir"`
}

// solve runs the rattler solver (node) against channels.
func solve(t *testing.T, specs, channels, platforms []string) ([]solved, error) {
	t.Helper()
	sol, _, err := solveWith(t, solveOptions{}, specs, channels, platforms)
	return sol, err
}

// solveOptions change how solve.cjs reads the channels.
type solveOptions struct {
	// NoShards: shard indexes answer 404 (client side), so rattler reads
	// the whole-file repodata.json.
	NoShards bool
	// Timeout bounds the solve (default 2 minutes).
	Timeout time.Duration
}

// solveWith is solve with options; it also returns every URL rattler
// asked for.
func solveWith(t *testing.T, opt solveOptions, specs, channels, platforms []string) ([]solved, []string, error) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"specs": specs, "channels": channels, "platforms": platforms, "noShards": opt.NoShards})
	timeout := opt.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(e2eDir, "solve.cjs"), string(req))
	cmd.Dir = e2eDir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("rattler solve %v: %v: %s", specs, err, stderr.String())
	}
	var out struct {
		Solution []solved `json:"solution"`
		Fetched  []string `json:"fetched"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, nil, fmt.Errorf("decode solve output %q: %w", stdout.String(), err)
	}
	return out.Solution, out.Fetched, nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// download GETs url (with header pairs) and returns the body.
func download(t testing.TB, url string, header ...string) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	return b
}
