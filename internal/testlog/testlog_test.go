package testlog_test

import (
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/condamesh/condamesh/internal/testlog"
)

// TestLogAfterTestEnds: a line logged by a goroutine once the tests ended
// (memberlist's, after the node that started it closed) is dropped; t.Log
// would panic the test binary. The helper test runs in a child process
// whose TestMain waits for that late line before exiting.
func TestLogAfterTestEnds(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperLogsLate$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TESTLOG_HELPER=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("a log line after the test ended: %v\n%s", err, out)
	}
}

var late = make(chan struct{})

func TestHelperLogsLate(t *testing.T) {
	if os.Getenv("TESTLOG_HELPER") == "" {
		return // run in the child process of TestLogAfterTestEnds
	}
	lg := testlog.New(t, slog.LevelInfo)
	go func() {
		time.Sleep(50 * time.Millisecond) // the test has returned
		lg.Info("after the test ended")
		close(late)
	}()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv("TESTLOG_HELPER") != "" {
		<-late
	}
	os.Exit(code)
}
