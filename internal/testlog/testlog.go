// Package testlog sends slog output to a test's log.
package testlog

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// New returns a logger writing to t.Log at level (debug logs are noisy:
// pass slog.LevelInfo for most tests). Lines logged once t and its
// cleanups have finished are dropped: a library goroutine may still log
// after the node that started it closed (memberlist's probe in flight
// during Shutdown does), and t.Log then panics.
func New(t testing.TB, level slog.Level) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() { // registered first, so it runs after the cleanups that stop nodes
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type writer struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
