package jobs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrorLogName is the name of a task's error log in Config.ErrorLogDir.
func ErrorLogName(taskID int64) string { return fmt.Sprintf("task-%d.log", taskID) }

// errorLog writes every error of one task, a line each, to a node-local
// file of at most Config.MaxErrorLog bytes (later errors are only
// counted). A nil *errorLog writes nothing.
type errorLog struct {
	f       *os.File
	w       *bufio.Writer
	path    string
	written int64
	max     int64
	dropped int64
	failed  bool
	r       *Runner
}

// openErrorLog creates the error log of task id, first deleting the
// oldest logs beyond Config.ErrorLogs. Without an ErrorLogDir, or when the
// file cannot be created (logged), it returns nil.
func (r *Runner) openErrorLog(id int64) *errorLog {
	dir := r.cfg.ErrorLogDir
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		r.log.Warn("task error log", "task", id, "err", err)
		return nil
	}
	r.pruneErrorLogs(dir, r.cfg.ErrorLogs-1)
	path := filepath.Join(dir, ErrorLogName(id))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		r.log.Warn("task error log", "task", id, "err", err)
		return nil
	}
	return &errorLog{f: f, w: bufio.NewWriter(f), path: path, max: r.cfg.MaxErrorLog, r: r}
}

// pruneErrorLogs deletes the error logs of the oldest tasks until keep
// are left.
func (r *Runner) pruneErrorLogs(dir string, keep int) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	var ids []int64
	for _, e := range entries {
		n, ok := strings.CutPrefix(e.Name(), "task-")
		if n, ok2 := strings.CutSuffix(n, ".log"); ok && ok2 {
			if id, err := strconv.ParseInt(n, 10, 64); err == nil && ErrorLogName(id) == e.Name() {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) <= keep {
		return
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids[:len(ids)-max(keep, 0)] {
		if err := os.Remove(filepath.Join(dir, ErrorLogName(id))); err != nil && !os.IsNotExist(err) {
			r.log.Warn("delete old task error log", "task", id, "err", err)
		}
	}
}

func (l *errorLog) write(msg string) {
	if l == nil || l.failed {
		return
	}
	line := strings.ReplaceAll(msg, "\n", " ") + "\n"
	if l.written+int64(len(line)) > l.max {
		l.dropped++
		return
	}
	if _, err := l.w.WriteString(line); err != nil {
		l.failed = true
		l.r.log.Warn("task error log", "path", l.path, "err", err)
		return
	}
	l.written += int64(len(line))
}

func (l *errorLog) close() {
	if l == nil {
		return
	}
	if l.dropped > 0 {
		fmt.Fprintf(l.w, "... %d more errors not written (the log is bounded to %d bytes)\n", l.dropped, l.max)
	}
	if err := l.w.Flush(); err != nil && !l.failed {
		l.r.log.Warn("task error log", "path", l.path, "err", err)
	}
	if err := l.f.Close(); err != nil {
		l.r.log.Warn("task error log", "path", l.path, "err", err)
	}
	l.failed = true // closed
}
