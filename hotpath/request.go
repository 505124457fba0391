package hotpath

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/condamesh/condamesh/internal/httpsyntax"
	"golang.org/x/net/http/httpguts"
)

// headMax is the longest request head the lean loop reads; longer heads
// go to the Fallback server, which allows up to 1 MB.
const headMax = 8 << 10

// request is one parsed request head. Its strings share one copy of the
// head, safe after the head's bytes are discarded.
type request struct {
	method string
	target string
	url    *url.URL
	minor  int // HTTP/1.minor
	host   string
	header http.Header
	close  bool // the client asked to close after this response
	vals   []string
}

// newRequest returns a request whose header map and value array are
// reused by every parse (one request at a time per connection).
func newRequest() *request {
	return &request{header: make(http.Header, 8), vals: make([]string, 0, 16)}
}

// headEnd returns the length of the request head at the start of buf
// through its first empty line, or 0 when buf holds no complete head.
// Lines end where net/http's reader ends them, at LF with or without a CR
// before it, so a head with bare LFs is complete here when it is complete
// for net/http (parseRequest refuses it and the Fallback answers it).
func headEnd(buf []byte) int {
	switch {
	case len(buf) > 0 && buf[0] == '\n':
		return 1
	case len(buf) > 1 && buf[0] == '\r' && buf[1] == '\n':
		return 2
	}
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(buf) && buf[i] == '\n':
			return i + 1
		case i+1 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n':
			return i + 2
		}
	}
}

// parseRequest parses a complete request head strictly. It accepts only
// what the lean loop answers: a bodiless GET or HEAD in origin-form over
// HTTP/1.0 or 1.1, with well-formed header lines, one Host, no upgrade
// and no expectation, and nothing net/http's server would refuse (a
// malformed Host, a bare LF). Anything else, valid or not, reports false
// and is left to the Fallback server, which answers (or refuses) it as
// net/http does; so this parser only ever has to be right about what it
// accepts. The header it fills is the one net/http's server hands its
// handlers: no Host field, one Content-Length, Pragma: no-cache implying
// Cache-Control.
func parseRequest(head []byte, r *request) bool {
	if len(head) < 4 || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return false
	}
	// One string for the whole head: the target and the header values
	// are substrings of it, so parsing allocates no string per field.
	lines := string(head[:len(head)-4])
	if strings.HasSuffix(lines, "\r\n") {
		return false // the head ended at an earlier empty line
	}
	line, rest, _ := strings.Cut(lines, "\r\n")
	method, rl, ok := strings.Cut(line, " ")
	if !ok {
		return false
	}
	target, proto, ok := strings.Cut(rl, " ")
	if !ok {
		return false
	}
	*r = request{header: r.header, vals: r.vals[:0]}
	clear(r.header)
	switch method {
	case http.MethodGet:
		r.method = http.MethodGet
	case http.MethodHead:
		r.method = http.MethodHead
	default:
		return false
	}
	switch proto {
	case "HTTP/1.1":
		r.minor = 1
	case "HTTP/1.0":
		r.minor = 0
	default:
		return false
	}
	if len(target) == 0 || target[0] != '/' || !validTarget(target) {
		return false
	}
	r.target = target
	if r.url = parseTarget(target); r.url == nil {
		return false
	}
	hosts := 0
	for len(rest) > 0 {
		var l string
		l, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(l, ":")
		if !ok || !httpsyntax.Token(name) {
			return false // also refuses obs-fold (a leading space)
		}
		value = strings.Trim(value, " \t")
		if !httpsyntax.FieldValue(value) {
			return false
		}
		key, known := commonHeaders[name]
		if !known {
			key = textproto.CanonicalMIMEHeaderKey(name)
		}
		switch key {
		case "Host":
			if !httpguts.ValidHostHeader(value) {
				return false // net/http answers 400
			}
			hosts++
			r.host = value
			continue // net/http's server takes Host out of the header
		case "Content-Length":
			if value != "0" {
				return false
			}
			if r.header[key] != nil {
				continue // net/http keeps one of equal duplicates
			}
		case "Transfer-Encoding", "Upgrade", "Expect", "Http2-Settings", "Te":
			return false
		case "Connection":
			for opt := range strings.SplitSeq(value, ",") {
				switch o := strings.TrimSpace(opt); {
				case strings.EqualFold(o, "close"):
					r.close = true
				case strings.EqualFold(o, "keep-alive"), len(o) == 0:
				default:
					return false // upgrade or hop-by-hop lists
				}
			}
		}
		if vs := r.header[key]; vs != nil {
			r.header[key] = append(vs, value)
		} else if len(r.vals) < cap(r.vals) {
			r.vals = append(r.vals, value) // one backing array for all fields
			n := len(r.vals)
			r.header[key] = r.vals[n-1 : n : n]
		} else {
			r.header[key] = []string{value}
		}
	}
	if hosts > 1 || (r.minor == 1 && hosts == 0) {
		return false
	}
	if r.minor == 0 && !hasToken(r.header["Connection"], "keep-alive") {
		r.close = true
	}
	if p := r.header["Pragma"]; len(p) > 0 && p[0] == "no-cache" && r.header["Cache-Control"] == nil {
		r.header["Cache-Control"] = []string{"no-cache"} // as net/http reads it
	}
	return true
}

// commonHeaders maps the spellings clients send of frequent header names
// to their canonical form without building a new string per request.
var commonHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language",
		"Connection", "If-None-Match", "If-Modified-Since", "Range", "If-Range", "Authorization",
		"X-Api-Key", "Cache-Control", "Pragma", "Content-Length", "Referer", "Cookie"} {
		m[k] = k
		m[strings.ToLower(k)] = k
	}
	m["X-API-Key"] = "X-Api-Key"
	return m
}()

// parseTarget parses an origin-form target as url.ParseRequestURI does;
// for the plain paths conda clients send (no escapes, no characters a
// path would need escaped) it builds the URL directly.
func parseTarget(target string) *url.URL {
	p, q, hasQuery := strings.Cut(target, "?")
	if plainPath(p) && (!hasQuery || q != "") {
		return &url.URL{Path: p, RawQuery: q}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	return u
}

// plainPath reports a path made only of characters url.URL keeps as they
// are: letters, digits and -._~/+
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/+", c) >= 0) {
			return false
		}
	}
	return true
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for opt := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(opt), token) {
				return true
			}
		}
	}
	return false
}

// validTarget accepts the visible ASCII a request target may hold
// (no spaces, controls or bytes >= 0x80: those need the Fallback's rules).
func validTarget(b string) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// httpRequest fills c's reusable *http.Request for r, as net/http would
// build it for the same head. The handler may not keep it after it
// returns (the http.Handler contract).
func (r *request) httpRequest(c *conn) *http.Request {
	proto := "HTTP/1.1"
	if r.minor == 0 {
		proto = "HTTP/1.0"
	}
	hr := &c.hreq
	*hr = *c.base // fields cleared, the connection's context kept
	hr.Method = r.method
	hr.URL = r.url
	hr.Proto = proto
	hr.ProtoMajor = 1
	hr.ProtoMinor = r.minor
	hr.Header = r.header
	hr.Body = http.NoBody
	hr.Host = r.host
	hr.Close = r.close
	hr.RemoteAddr = c.remote
	hr.RequestURI = r.target
	return hr
}
