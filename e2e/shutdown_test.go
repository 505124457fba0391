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
