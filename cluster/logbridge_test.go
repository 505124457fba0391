package cluster

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestLogBridges: Raft's hclog calls and memberlist's "[LEVEL]" lines
// arrive in slog at their own level, with their fields as attributes and
// the node attribute once.
func TestLogBridges(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "n1")
	hl := hclogAdapter(base.With("component", "cluster"))
	hl.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "10.0.0.1:8300", "term", 3)
	hl.Named("snapshot").With("id", "s1").Error("failed", "odd")
	hl.Debug("below the adapter's level") // raft logs at info and above
	NewStdLogger(base.With("component", "gossip")).Printf("[WARN] memberlist: Was able to connect to n2 over TCP but UDP probes failed")
	NewStdLogger(base).Print("2026/01/02 03:04:05 [ERR] memberlist: failed to receive: EOF")
	got := records(t, &buf)
	want := []map[string]any{
		{"level": "WARN", "msg": "heartbeat timeout reached, starting election", "logger": "raft", "last-leader-addr": "10.0.0.1:8300", "term": float64(3), "component": "cluster"},
		{"level": "ERROR", "msg": "failed", "logger": "raft.snapshot", "id": "s1", "EXTRA_VALUE_AT_END": "odd"},
		{"level": "WARN", "msg": "memberlist: Was able to connect to n2 over TCP but UDP probes failed", "component": "gossip"},
		{"level": "ERROR", "msg": "memberlist: failed to receive: EOF"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d:\n%s", len(got), len(want), buf.String())
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("record %d: %s = %v, want %v (%v)", i, k, got[i][k], v, got[i])
			}
		}
		if got[i]["node"] != "n1" {
			t.Errorf("record %d: node = %v", i, got[i]["node"])
		}
	}
	if strings.Count(buf.String(), `"node"`) != len(want) {
		t.Errorf("a record carries node more than once:\n%s", buf.String())
	}
}
