package e2e

import (
	"strings"
	"testing"
)

// TestGracefulShutdown stops the server with SIGTERM: it must exit 0, log
// its ordered shutdown, and keep everything on restart (the admin key is
// not printed again).
func TestGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.mustDo(201, "POST", "/api/channels", `{"name":"keep","private":false}`)
	s.stop()
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, s.logs.String())
	}
	if !strings.Contains(s.logs.String(), "node stopped") {
		t.Fatalf("no orderly shutdown logged:\n%s", s.logs.String())
	}
	s2 := startServer(t, dir)
	s2.mustDo(200, "GET", "/api/channels/keep", "")
	if strings.Contains(s2.logs.String(), "shown only now") {
		t.Fatal("admin key printed again on restart")
	}
}

// TestDownloadCountsSurviveRestart: counts are batched (flushed every 10 s),
// and a graceful stop flushes the pending batch, so nothing counted is
// lost across a restart. (A SIGKILL loses at most the last 10 s of counts:
// the documented bound.)
func TestDownloadCountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.mustDo(201, "POST", "/api/channels", `{"name":"counted","private":false}`)
	pkgs := testPackages(t)
	if code, body := s.uploadMultipart("counted", map[string][]byte{"foo-1.0-0.tar.bz2": pkgs["noarch/foo-1.0-0.tar.bz2"]}); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	for range 3 {
		download(t, s.url+"/get/counted/noarch/foo-1.0-0.tar.bz2")
	}
	s.stop() // well within the 10 s flush interval: only the shutdown flush saves them
	s2 := startServer(t, dir)
	var m struct {
		Total int64 `json:"total"`
	}
	decodeJSON(t, s2.mustDo(200, "GET", "/metrics/channels/counted/packages/foo/versions/noarch/foo-1.0-0.tar.bz2?period=Y", ""), &m)
	if m.Total != 3 {
		t.Fatalf("downloads after a graceful restart: %d, want 3", m.Total)
	}
}
