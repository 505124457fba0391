package api

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRefusalLogsNoInput: a refused request's log line names the invalid
// fields, never the input quoted back to the caller (a body that may hold
// credentials).
func TestRefusalLogsNoInput(t *testing.T) {
	var buf strings.Builder
	s := &Server{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	body := `{"name": "c", "metadata": {"upstream_authorization": "Bearer tok-2b7e1516"`
	rec := httptest.NewRecorder()
	s.writeError(rec, httptest.NewRequest("POST", "/api/channels", nil), validation([]any{"body"}, "json_invalid", "JSON decode error", body))
	if rec.Code != 422 || !strings.Contains(buf.String(), "json_invalid") {
		t.Fatalf("status %d, log %q", rec.Code, buf.String())
	}
	if strings.Contains(buf.String(), "tok-2b7e1516") {
		t.Fatalf("the log quotes the refused body: %s", buf.String())
	}
}
