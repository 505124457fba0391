package cluster

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogSlog is an hclog.Logger that logs through slog: hclog levels map
// onto slog levels (trace onto below debug) and key/value arguments become
// slog attributes, so Raft's lines arrive as structured records rather
// than formatted text inside a msg field.
type hclogSlog struct {
	l     *slog.Logger
	name  string
	args  []any
	level *slog.LevelVar
}

// levelTrace is hclog's trace, below slog's debug.
const levelTrace = slog.LevelDebug - 4

// NewHCLog returns an hclog.Logger writing to l at level and above.
func NewHCLog(l *slog.Logger, name string, level hclog.Level) hclog.Logger {
	lv := new(slog.LevelVar)
	lv.Set(slogLevel(level))
	return &hclogSlog{l: l, name: name, level: lv}
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return levelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func hclogLevel(l slog.Level) hclog.Level {
	switch {
	case l <= levelTrace:
		return hclog.Trace
	case l <= slog.LevelDebug:
		return hclog.Debug
	case l <= slog.LevelInfo:
		return hclog.Info
	case l <= slog.LevelWarn:
		return hclog.Warn
	}
	return hclog.Error
}

func (h *hclogSlog) Log(level hclog.Level, msg string, args ...any) {
	lv := slogLevel(level)
	if lv < h.level.Level() || !h.l.Enabled(context.Background(), lv) {
		return
	}
	attrs := make([]any, 0, len(h.args)+len(args)+2)
	if h.name != "" {
		attrs = append(attrs, "logger", h.name)
	}
	attrs = append(attrs, h.args...)
	attrs = append(attrs, fixArgs(args)...)
	h.l.Log(context.Background(), lv, msg, attrs...)
}

// fixArgs makes hclog's arguments slog pairs: an odd trailing value gets
// hclog's EXTRA_VALUE_AT_END key; a non-string key is formatted.
func fixArgs(args []any) []any {
	out := make([]any, 0, len(args)+1)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, hclog.MissingKey, args[i])
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = slog.AnyValue(args[i]).String()
		}
		out = append(out, key, args[i+1])
	}
	return out
}

func (h *hclogSlog) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogSlog) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogSlog) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogSlog) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogSlog) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }
func (h *hclogSlog) IsTrace() bool                 { return h.enabled(hclog.Trace) }
func (h *hclogSlog) IsDebug() bool                 { return h.enabled(hclog.Debug) }
func (h *hclogSlog) IsInfo() bool                  { return h.enabled(hclog.Info) }
func (h *hclogSlog) IsWarn() bool                  { return h.enabled(hclog.Warn) }
func (h *hclogSlog) IsError() bool                 { return h.enabled(hclog.Error) }
func (h *hclogSlog) ImpliedArgs() []any            { return h.args }
func (h *hclogSlog) Name() string                  { return h.name }
func (h *hclogSlog) SetLevel(l hclog.Level)        { h.level.Set(slogLevel(l)) }
func (h *hclogSlog) GetLevel() hclog.Level         { return hclogLevel(h.level.Level()) }

func (h *hclogSlog) enabled(l hclog.Level) bool {
	lv := slogLevel(l)
	return lv >= h.level.Level() && h.l.Enabled(context.Background(), lv)
}

func (h *hclogSlog) With(args ...any) hclog.Logger {
	c := *h
	c.args = append(append([]any(nil), h.args...), fixArgs(args)...)
	return &c
}

func (h *hclogSlog) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}

func (h *hclogSlog) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

func (h *hclogSlog) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hclogSlog) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return levelWriter{h.l.With("logger", h.name)}
}

// NewStdLogger returns a standard library logger for libraries that log
// "[LEVEL] name: message" lines (memberlist): each line becomes one slog
// record at the level its prefix names (debug when it names none).
func NewStdLogger(l *slog.Logger) *log.Logger { return log.New(levelWriter{l}, "", 0) }

// levelWriter turns "[LEVEL] text" lines into slog records.
type levelWriter struct{ l *slog.Logger }

func (w levelWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		lv, msg := parseLevelLine(string(line))
		w.l.Log(context.Background(), lv, msg)
	}
	return len(p), nil
}

// parseLevelLine reads the "[LEVEL] " prefix of a library log line, after
// any timestamp the library put first.
func parseLevelLine(line string) (slog.Level, string) {
	line = strings.TrimSpace(line)
	i := strings.IndexByte(line, '[')
	j := strings.IndexByte(line, ']')
	if i < 0 || j < i || i > 40 {
		return slog.LevelDebug, line
	}
	msg := strings.TrimSpace(line[j+1:])
	switch strings.TrimSpace(strings.ToUpper(line[i+1 : j])) {
	case "TRACE":
		return levelTrace, msg
	case "DEBUG":
		return slog.LevelDebug, msg
	case "INFO":
		return slog.LevelInfo, msg
	case "WARN", "WARNING":
		return slog.LevelWarn, msg
	case "ERR", "ERROR":
		return slog.LevelError, msg
	}
	return slog.LevelDebug, line
}
