package hotpath

import (
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

// seen is what a handler sees of a request head.
type seen struct {
	method, requestURI, host string
	url                      url.URL
	minor                    int
	close                    bool
	length                   int64
	header                   http.Header
}

// netHTTPOracle runs a net/http server on in-memory connections: read
// sends one request head through the whole of net/http's server (its
// reader and the checks its connection loop adds: Host, header names and
// values) and returns what the handler saw, or ok=false with what the
// server answered instead.
type netHTTPOracle struct {
	ln   *connListener
	seen chan seen
}

func newNetHTTPOracle(tb testing.TB) *netHTTPOracle {
	o := &netHTTPOracle{ln: newConnListener(&net.TCPAddr{}), seen: make(chan seen, 1)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.seen <- seen{method: r.Method, requestURI: r.RequestURI, host: r.Host, url: *r.URL, minor: r.ProtoMinor,
			close: r.Close, length: r.ContentLength, header: r.Header.Clone()}
	})}
	go func() { _ = srv.Serve(o.ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return o
}

func (o *netHTTPOracle) read(tb testing.TB, head []byte) (s seen, ok bool, answer string) {
	client, server := net.Pipe()
	defer client.Close()
	o.ln.give(server)
	go func() { _, _ = client.Write(head) }()
	answered := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(client)
		answered <- string(b)
	}()
	select {
	case s := <-o.seen:
		return s, true, ""
	case a := <-answered:
		return seen{}, false, a
	case <-time.After(10 * time.Second):
		tb.Fatalf("net/http neither served nor refused %q", head)
		return seen{}, false, ""
	}
}

// FuzzParseRequest checks the lean parser against net/http's server:
// whatever it accepts, net/http's server must accept too (a head the
// lean loop sees as complete, nothing left over for a body) and hand its
// handler the same request: method, target, URL, Host, protocol, close,
// length and every header field. So the two paths of one server never
// disagree about a request, and what the lean parser refuses goes to
// net/http, which answers it.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /get/c/noarch/repodata.json HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n",
		"HEAD /t/tok/get/c/linux-64/a-1-0.conda HTTP/1.1\r\nHost: h:8000\r\nAccept-Encoding: gzip\r\n\r\n",
		"GET /get/c?x=%20y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nX:  padded \t\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\n X: folded\r\n\r\n",
		"GET http://h/get/a HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /get/a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /get/c/a%2Fb?x HTTP/1.1\r\nhost: h\r\nx-api-key: k\r\n\r\n",
		"GET /get/c/{x}+1? HTTP/1.1\r\nHOST: h\r\n\r\n",
		// Bare LFs, which net/http reads as line ends.
		"GET /get/a HTTP/1.1\nHost: h\n\n",
		"GET /get/a HTTP/1.1\r\nHost: h\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n",
		"\r\nGET /get/a HTTP/1.1\r\nHost: h\r\n\r\n",
		// Host values net/http's server refuses or keeps.
		"GET /get/a HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: u@h\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h/x\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\xe9\r\n\r\n",
		"GET /get/a HTTP/1.0\r\nHost: {h}\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost:\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		// Fields net/http's reader rewrites.
		"GET /get/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 00\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
		"GET /get/a HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	o := newNetHTTPOracle(f)
	f.Fuzz(func(t *testing.T, head []byte) {
		r := newRequest()
		if !parseRequest(head, r) {
			return
		}
		if n := headEnd(head); n != len(head) {
			t.Fatalf("lean parser accepted a head that ends at %d of %d: %q", n, len(head), head)
		}
		std, ok, answer := o.read(t, head)
		if !ok {
			t.Fatalf("lean parser accepted what net/http's server refuses (%q): %q", answer, head)
		}
		lean := seen{method: r.method, requestURI: r.target, host: r.host, url: *r.url, minor: r.minor, close: r.close, header: r.header}
		if std.method != lean.method || std.requestURI != lean.requestURI || std.url != lean.url || std.host != lean.host ||
			std.minor != lean.minor || std.close != lean.close || std.length != 0 || !maps.EqualFunc(std.header, lean.header, slices.Equal[[]string]) {
			t.Fatalf("requests differ for %q:\nnet/http %+v\nlean     %+v", head, std, lean)
		}
	})
}
