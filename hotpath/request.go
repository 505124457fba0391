package hotpath

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
)

// headMax is the longest request head the lean loop reads; longer heads
// go to the Fallback server, which allows up to 1 MB.
const headMax = 8 << 10

// request is one parsed request head. Strings alias nothing: they are
// copies, safe after the head's bytes are discarded.
type request struct {
	method string
	target string
	url    *url.URL
	minor  int // HTTP/1.minor
	host   string
	header http.Header
	close  bool // the client asked to close after this response
}

// headEnd returns the length of the request head at the start of buf
// (through its empty line), or 0 when buf holds no complete head.
func headEnd(buf []byte) int {
	i := bytes.Index(buf, []byte("\r\n\r\n"))
	if i < 0 {
		return 0
	}
	return i + 4
}

// parseRequest parses a complete request head strictly. It accepts only
// what the lean loop answers: a bodiless GET or HEAD in origin-form over
// HTTP/1.0 or 1.1, with well-formed header lines, one Host, no upgrade
// and no expectation. Anything else, valid or not, reports false and is
// left to the Fallback server, which answers (or refuses) it as net/http
// does; so this parser only ever has to be right about what it accepts.
func parseRequest(head []byte) (*request, bool) {
	if len(head) < 4 || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		return nil, false
	}
	lines := head[:len(head)-4]
	line, rest, _ := bytes.Cut(lines, []byte("\r\n"))
	method, rl, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return nil, false
	}
	target, proto, ok := bytes.Cut(rl, []byte(" "))
	if !ok {
		return nil, false
	}
	r := &request{}
	switch string(method) {
	case http.MethodGet:
		r.method = http.MethodGet
	case http.MethodHead:
		r.method = http.MethodHead
	default:
		return nil, false
	}
	switch string(proto) {
	case "HTTP/1.1":
		r.minor = 1
	case "HTTP/1.0":
		r.minor = 0
	default:
		return nil, false
	}
	if len(target) == 0 || target[0] != '/' || !validTarget(target) {
		return nil, false
	}
	r.target = string(target)
	u, err := url.ParseRequestURI(r.target)
	if err != nil {
		return nil, false
	}
	r.url = u
	r.header = make(http.Header, 8)
	hosts := 0
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(name) == 0 || !validToken(name) {
			return nil, false // also refuses obs-fold (a leading space)
		}
		value = bytes.Trim(value, " \t")
		if !validValue(value) {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		switch key {
		case "Host":
			hosts++
			r.host = string(value)
		case "Content-Length":
			if string(value) != "0" {
				return nil, false
			}
		case "Transfer-Encoding", "Upgrade", "Expect", "Http2-Settings", "Te":
			return nil, false
		case "Connection":
			for _, opt := range bytes.Split(value, []byte(",")) {
				switch o := bytes.TrimSpace(opt); {
				case bytes.EqualFold(o, []byte("close")):
					r.close = true
				case bytes.EqualFold(o, []byte("keep-alive")), len(o) == 0:
				default:
					return nil, false // upgrade or hop-by-hop lists
				}
			}
		}
		r.header[key] = append(r.header[key], string(value))
	}
	if hosts > 1 || (r.minor == 1 && hosts == 0) {
		return nil, false
	}
	if r.minor == 0 && !hasToken(r.header["Connection"], "keep-alive") {
		r.close = true
	}
	return r, true
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, opt := range bytes.Split([]byte(v), []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(opt), []byte(token)) {
				return true
			}
		}
	}
	return false
}

// validTarget accepts the visible ASCII a request target may hold
// (no spaces, controls or bytes >= 0x80: those need the Fallback's rules).
func validTarget(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// validToken accepts an RFC 9110 token (a header field name).
func validToken(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

// validValue accepts field content: visible characters, spaces and tabs.
func validValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// httpRequest builds the *http.Request the handler sees, as net/http
// would for the same head.
func (r *request) httpRequest(c *conn) *http.Request {
	proto := "HTTP/1.1"
	if r.minor == 0 {
		proto = "HTTP/1.0"
	}
	hr := &http.Request{
		Method:     r.method,
		URL:        r.url,
		Proto:      proto,
		ProtoMajor: 1,
		ProtoMinor: r.minor,
		Header:     r.header,
		Body:       http.NoBody,
		Host:       r.host,
		Close:      r.close,
		RemoteAddr: c.remote,
		RequestURI: r.target,
	}
	return hr.WithContext(c.ctx)
}
