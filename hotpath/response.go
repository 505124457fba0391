package hotpath

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/condamesh/condamesh/internal/httpsyntax"
)

// pendingMax is how much body a response without Content-Length buffers
// before it switches to chunked encoding, as net/http does.
const pendingMax = 2 << 10

// answer runs the handler for r and reports whether the connection stays
// open for the next request. The answer stays in the connection's buffer;
// the loop sends it before it waits for bytes or closes.
func (c *conn) answer(r *request) bool {
	hr := r.httpRequest(c)
	clear(c.rhead)
	w := &c.resp
	*w = response{c: c, req: r, header: c.rhead, cl: -1, keep: !r.close, pending: w.pending[:0]}
	c.srv.cfg.Handler.ServeHTTP(w, hr)
	if err := w.finish(); err != nil {
		return false
	}
	return w.keep
}

// response is the http.ResponseWriter of the lean loop. It frames the body
// like net/http: the handler's Content-Length, else the whole body's length
// when it is small and complete, else chunked (HTTP/1.1) or close-delimited
// (HTTP/1.0).
type response struct {
	c           *conn
	req         *request
	header      http.Header
	status      int
	wroteHeader bool // the status is fixed
	sentHeader  bool // the head is written to the connection buffer
	keep        bool
	chunked     bool
	cl          int64 // declared length; -1 while unknown
	written     int64 // body bytes accepted from the handler
	pending     []byte
	err         error
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader || code < 200 || code > 999 {
		return // informational responses are not sent by this path's handlers
	}
	w.wroteHeader, w.status = true, code
	if v := w.header.Get("Content-Length"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			w.header.Del("Content-Length")
		} else {
			w.cl = n
		}
	}
}

func (w *response) bodyAllowed() bool {
	return w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *response) isHead() bool { return w.req.method == http.MethodHead }

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.sentHeader {
		if w.cl < 0 && len(w.pending)+len(p) <= pendingMax {
			w.pending = append(w.pending, p...)
			w.written += int64(len(p))
			return len(p), nil
		}
		if w.sendHeader(false, p); w.err != nil {
			return 0, w.err
		}
	}
	return w.writeBody(p)
}

// writeBody writes p after the head, in the response's framing (a HEAD
// response only counts it).
func (w *response) writeBody(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if w.isHead() {
		w.written += int64(len(p))
		return len(p), nil
	}
	bw := w.c.bw
	switch {
	case w.chunked:
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
		_, _ = bw.Write(p)
		_, w.err = bw.WriteString("\r\n")
	case w.cl >= 0 && w.written+int64(len(p)) > w.cl:
		n := w.cl - w.written
		_, w.err = bw.Write(p[:n])
		w.written += n
		if w.err == nil {
			w.err = http.ErrContentLength
		}
		return int(n), w.err
	default:
		_, w.err = bw.Write(p)
	}
	if w.err != nil {
		w.keep = false
		return 0, w.err
	}
	w.written += int64(len(p))
	return len(p), nil
}

// sendfileMin is the smallest file body sent with sendfile; smaller ones
// are copied behind the head so that head and body leave in one write.
const sendfileMin = 32 << 10

// ReadFrom sends a file with sendfile when the length is declared (what
// http.ServeContent does for a full or single-range response) and the body
// is large enough to be worth a second system call.
func (w *response) ReadFrom(src io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	rf, isTCP := w.c.rwc.(io.ReaderFrom)
	lr, limited := src.(*io.LimitedReader)
	_, typed := w.header["Content-Type"]
	if !isTCP || w.cl < 0 || w.isHead() || !w.bodyAllowed() || !limited || lr.N > w.cl-w.written || lr.N < sendfileMin || !isFile(lr.R) || (!typed && !w.sentHeader) {
		return io.Copy(writerOnly{w}, src) // Write sniffs a missing type
	}
	if !w.sentHeader {
		if w.sendHeader(false, nil); w.err != nil {
			return 0, w.err
		}
	}
	if w.err = w.c.bw.Flush(); w.err != nil {
		w.keep = false
		return 0, w.err
	}
	n, err := rf.ReadFrom(lr)
	w.written += n
	if err != nil {
		w.err, w.keep = err, false
	}
	return n, err
}

func isFile(r io.Reader) bool {
	_, ok := r.(*os.File)
	return ok
}

// writerOnly hides ReadFrom, for the generic copy.
type writerOnly struct{ io.Writer }

// Flush sends the head and everything written so far.
func (w *response) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		w.sendHeader(false, nil)
	}
	if w.err == nil {
		w.err = w.c.bw.Flush()
	}
}

// finish completes the response after the handler returned.
func (w *response) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.sentHeader {
		w.sendHeader(true, nil)
	} else if w.chunked && w.err == nil {
		_, w.err = w.c.bw.WriteString("0\r\n\r\n")
	}
	if w.cl >= 0 && w.written < w.cl && !w.isHead() && w.bodyAllowed() {
		w.keep = false // the client waits for bytes that never come
	}
	return w.err
}

// sendHeader writes the status line and header fields, then any pending
// body. final means the handler has returned, so a pending body is all of
// it and its length can be declared. first is the body about to be written
// when nothing is pending; a missing Content-Type is sniffed from the first
// body bytes, as net/http does. The head is laid out as net/http lays it
// out: the handler's fields sorted, then Date, Content-Length,
// Content-Type, Connection and Transfer-Encoding where the server adds
// them.
func (w *response) sendHeader(final bool, first []byte) {
	w.sentHeader = true
	h := w.header
	var added struct{ length, ctype, connection, te string }
	switch {
	case w.status == http.StatusNoContent:
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
	case !w.bodyAllowed() || w.cl >= 0:
	case final && (!w.isHead() || w.written > 0):
		w.cl = w.written
		added.length = strconv.FormatInt(w.written, 10)
	case w.isHead():
	case w.req.minor == 1:
		w.chunked = true
		added.te = "chunked"
	default:
		w.keep = false // HTTP/1.0, unknown length: the close ends the body
	}
	if len(w.pending) > 0 {
		first = w.pending
	}
	if _, set := h["Content-Type"]; !set && w.bodyAllowed() && len(first) > 0 && h.Get("Content-Encoding") == "" {
		added.ctype = http.DetectContentType(first)
	}
	switch _, set := h["Connection"]; {
	case hasToken(h["Connection"], "close"):
		w.keep = false
	case !w.keep:
		h.Del("Connection")
		if w.req.minor == 1 {
			added.connection = "close" // an HTTP/1.0 client expects the close
		}
	case w.req.minor == 0 && !set:
		added.connection = "keep-alive"
	}

	bw := w.c.bw
	if w.req.minor == 0 {
		_, _ = bw.WriteString("HTTP/1.0 ") // as net/http answers an HTTP/1.0 request
	} else {
		_, _ = bw.WriteString("HTTP/1.1 ")
	}
	_, _ = bw.WriteString(strconv.Itoa(w.status))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(w.status))
	_, _ = bw.WriteString("\r\n")
	var keys [24]string
	ks := keys[:0]
	for k := range h {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		if !httpsyntax.Token(k) {
			continue // net/http drops a field it cannot write
		}
		for _, v := range h[k] {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(fieldValue(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
	if _, set := h["Date"]; !set {
		writeField(bw, "Date", httpDate())
	}
	writeField(bw, "Content-Length", added.length)
	writeField(bw, "Content-Type", added.ctype)
	writeField(bw, "Connection", added.connection)
	writeField(bw, "Transfer-Encoding", added.te)
	_, w.err = bw.WriteString("\r\n")
	if len(w.pending) > 0 && w.err == nil {
		p := w.pending
		w.pending = w.pending[:0]
		w.written -= int64(len(p))
		_, _ = w.writeBody(p)
	}
	if w.err != nil {
		w.keep = false
	}
}

// writeField writes a field the server adds; an empty value is one it
// does not add.
func writeField(bw *bufio.Writer, name, value string) {
	if value == "" {
		return
	}
	_, _ = bw.WriteString(name)
	_, _ = bw.WriteString(": ")
	_, _ = bw.WriteString(value)
	_, _ = bw.WriteString("\r\n")
}

// fieldValue keeps a header value on one line without surrounding
// white space, as net/http writes it.
func fieldValue(v string) string {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return textproto.TrimString(v)
}

// httpDate is the Date header value, formatted once per second.
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.val
	}
	d := &cachedDate{sec: now.Unix(), val: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.val
}

type cachedDate struct {
	sec int64
	val string
}

var dateCache atomic.Pointer[cachedDate]
