package upstream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

var headSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 03:00:00 GMT\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nLast-Modified: Thu, 26 Nov 2026 02:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"1-3\"\r\nAccept-Ranges: bytes\r\n\r\nabcHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\noops\r\n0\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 01\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length:  7 \r\n\r\nshort",
	"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX: a\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1",
	"HTTP/1.1 2OO OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-\xff: y\r\nContent-Length: 1\r\n\r\nx",
}

// TestReadPlainHeadMatchesNetHTTP: the lean reader takes the answers of a
// static file server and leaves the rest to net/http; what it takes, it
// reads as net/http does.
func TestReadPlainHeadMatchesNetHTTP(t *testing.T) {
	lean := 0
	for _, s := range headSeeds {
		if checkPlainHead(t, []byte(s)) {
			lean++
		}
	}
	if lean < 4 {
		t.Fatalf("the lean reader took only %d of the plain seeds", lean)
	}
}

func FuzzReadPlainHead(f *testing.F) {
	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkPlainHead(t, b) })
}

// checkPlainHead compares readPlainHead with http.ReadResponse on b, and
// says whether the lean reader took it.
func checkPlainHead(t *testing.T, b []byte) bool {
	t.Helper()
	br := bufio.NewReaderSize(bytes.NewReader(b), 64<<10)
	status, length, closeConn, ok := readPlainHead(br)
	if !ok {
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, b) {
			t.Fatalf("%q: declined but consumed %d bytes", b, len(b)-len(rest))
		}
		return false
	}
	nr := bufio.NewReader(bytes.NewReader(b))
	resp, err := http.ReadResponse(nr, nil)
	if err != nil {
		t.Fatalf("%q: lean reader took what net/http refuses: %v", b, err)
	}
	if resp.StatusCode != status || resp.ContentLength != length || resp.Close != closeConn {
		t.Fatalf("%q: lean status %d length %d close %v; net/http %d %d %v", b, status, length, closeConn, resp.StatusCode, resp.ContentLength, resp.Close)
	}
	leanBody, leanErr := io.ReadAll(&fixedBody{r: br, n: length})
	netBody, netErr := io.ReadAll(resp.Body)
	if !bytes.Equal(leanBody, netBody) || (leanErr == nil) != (netErr == nil) {
		t.Fatalf("%q: lean body %q (%v), net/http %q (%v)", b, leanBody, leanErr, netBody, netErr)
	}
	leanRest, _ := io.ReadAll(br)
	netRest, _ := io.ReadAll(nr)
	if netErr == nil && !bytes.Equal(leanRest, netRest) {
		t.Fatalf("%q: after the body the lean reader is at %q, net/http at %q", b, leanRest, netRest)
	}
	return true
}
