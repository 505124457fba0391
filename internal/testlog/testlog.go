// Package testlog sends slog output to a test's log.
package testlog

import (
	"log/slog"
	"strings"
	"testing"
)

// New returns a logger writing to t.Log at level (debug logs are noisy:
// pass slog.LevelInfo for most tests).
func New(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(writer{t}, &slog.HandlerOptions{Level: level}))
}

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
