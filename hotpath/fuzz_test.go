package hotpath

import (
	"bufio"
	"bytes"
	"net/http"
	"slices"
	"testing"
)

// FuzzParseRequest checks the lean parser against net/http's: whatever it
// accepts, http.ReadRequest must accept too and read the same request (so
// the two paths of one server can never disagree about a request), with
// nothing left over for a body.
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
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		r := newRequest()
		if !parseRequest(head, r) {
			return
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("lean parser accepted what net/http refuses (%v): %q", err, head)
		}
		if std.Method != r.method || std.RequestURI != r.target || std.URL.String() != r.url.String() ||
			std.URL.Path != r.url.Path || std.URL.RawPath != r.url.RawPath || std.URL.RawQuery != r.url.RawQuery || std.URL.ForceQuery != r.url.ForceQuery ||
			std.Host != r.host || std.ProtoMinor != r.minor || std.Close != r.close || std.ContentLength != 0 {
			t.Fatalf("requests differ for %q:\nnet/http %s %q %q minor=%d close=%v len=%d\nlean     %s %q %q minor=%d close=%v",
				head, std.Method, std.URL, std.Host, std.ProtoMinor, std.Close, std.ContentLength, r.method, r.url, r.host, r.minor, r.close)
		}
		for k, v := range std.Header {
			if k == "Host" {
				continue
			}
			if !slices.Equal(v, r.header[k]) {
				t.Fatalf("header %s differs for %q: net/http %q, lean %q", k, head, v, r.header[k])
			}
		}
		for k := range r.header {
			if _, ok := std.Header[k]; !ok && k != "Host" {
				t.Fatalf("lean parser has header %s that net/http does not, for %q", k, head)
			}
		}
	})
}
