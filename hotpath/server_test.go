package hotpath

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// started is a Server serving on 127.0.0.1:0.
type started struct {
	srv  *Server
	addr string
	done chan error
}

func start(t *testing.T, cfg Config) *started {
	t.Helper()
	if cfg.Fallback == nil {
		cfg.Fallback = &http.Server{Handler: cfg.Handler, ReadHeaderTimeout: 5 * time.Second}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &started{srv: New(cfg), addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { s.done <- s.srv.Serve(ln) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

// startStd is a plain net/http server with the same handler: the reference.
func startStd(t *testing.T, h http.Handler) string {
	t.Helper()
	return startStdWith(t, &http.Server{Handler: h})
}

// startStdWith serves srv on 127.0.0.1:0 and returns its address.
func startStdWith(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// exchange sends raw request bytes on a new connection and reads one
// response (for the method given, which tells whether a body follows).
type reply struct {
	status   int
	header   http.Header
	length   int64
	te       []string
	close    bool
	body     []byte
	bodyErr  bool
	connOpen bool // a second request on the connection was answered
}

// dialSend opens a connection to addr (closed at cleanup), with a
// deadline for the whole exchange, and sends raw on it.
func dialSend(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c
}

func exchange(t *testing.T, addr, method, raw string) reply {
	t.Helper()
	c := dialSend(t, addr, raw)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response to %q: %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	bodyErr := err != nil
	r := reply{status: resp.StatusCode, header: resp.Header, length: resp.ContentLength, te: resp.TransferEncoding, close: resp.Close, bodyErr: bodyErr}
	r.header.Del("Date")
	if ct := r.header.Get("Content-Type"); strings.HasPrefix(ct, "multipart/byteranges; boundary=") {
		boundary := strings.TrimPrefix(ct, "multipart/byteranges; boundary=")
		r.header.Set("Content-Type", "multipart/byteranges; boundary=B") // random per response
		body = bytes.ReplaceAll(body, []byte(boundary), []byte("B"))
	}
	r.body = body
	if !bodyErr && !resp.Close {
		_, _ = io.WriteString(c, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp2, err := http.ReadResponse(br, nil); err == nil {
			_, _ = io.Copy(io.Discard, resp2.Body)
			r.connOpen = true
		}
	}
	return r
}

// TestSameAnswersAsNetHTTP sends the same raw requests to the lean loop and
// to net/http running the same handlers, and requires identical answers:
// status, header fields, framing, body, and whether the connection stays
// open.
func TestSameAnswersAsNetHTTP(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	file := filepath.Join(dir, "blob")
	if err := os.WriteFile(file, big, 0o644); err != nil {
		t.Fatal(err)
	}
	mod := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	handlers := map[string]http.HandlerFunc{
		"not-modified": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("ETag", `"abc"`)
			w.Header().Set("Cache-Control", "public, max-age=30")
			w.WriteHeader(http.StatusNotModified)
		},
		"small": func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") },
		"sniffed": func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "<html><body>x</body></html>")
		},
		"json-error": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"detail":"gone"}`)
		},
		"empty": func(w http.ResponseWriter, r *http.Request) {},
		"no-content": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "3")
			w.WriteHeader(http.StatusNoContent)
		},
		"declared": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		},
		"short": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "hello")
		},
		"unknown-large": func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < 100; i++ {
				_, _ = w.Write(big[:1000])
			}
		},
		"just-over-buffer": func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big[:2049]) },
		"at-buffer":        func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big[:2048]) },
		"flushed": func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "part one;")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part two")
		},
		"redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere?x=1", http.StatusTemporaryRedirect)
		},
		"close-asked": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		},
		"serve-file": func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(file)
			if err != nil {
				panic(err)
			}
			defer f.Close()
			w.Header().Set("ETag", `"blob"`)
			http.ServeContent(w, r, "", mod, f)
		},
		"serve-bytes": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/zstd")
			http.ServeContent(w, r, "", mod, bytes.NewReader(big[:3000]))
		},
		"echo": func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s %q %q %s %v %d %q", r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Proto, r.Close, r.ContentLength, r.Header["Accept"])
		},
	}
	mux := http.NewServeMux()
	for name, h := range handlers {
		mux.Handle("/"+name, h)
	}
	hot := start(t, Config{Handler: mux})
	std := startStd(t, mux)
	requests := []struct {
		name, method, extra, proto string
	}{
		{"get", "GET", "", "HTTP/1.1"},
		{"head", "HEAD", "", "HTTP/1.1"},
		{"http1.0", "GET", "", "HTTP/1.0"},
		{"http1.0 keep-alive", "GET", "Connection: keep-alive\r\n", "HTTP/1.0"},
		{"close", "GET", "Connection: close\r\n", "HTTP/1.1"},
		{"range", "GET", "Range: bytes=10-99\r\n", "HTTP/1.1"},
		{"multi-range", "GET", "Range: bytes=0-1,5-9\r\n", "HTTP/1.1"},
		{"bad range", "GET", "Range: bytes=99999999-\r\n", "HTTP/1.1"},
		{"if-none-match", "GET", "If-None-Match: W/\"blob\"\r\n", "HTTP/1.1"},
		{"if-modified-since", "GET", "If-Modified-Since: Sat, 03 Jan 2026 00:00:00 GMT\r\n", "HTTP/1.1"},
		{"head range", "HEAD", "Range: bytes=0-9\r\n", "HTTP/1.1"},
		{"accept twice", "GET", "Accept: a\r\naccept: b\r\n", "HTTP/1.1"},
		{"zero length", "GET", "Content-Length: 0\r\n", "HTTP/1.1"},
	}
	for name := range handlers {
		for _, rq := range requests {
			t.Run(name+"/"+rq.name, func(t *testing.T) {
				target := "/" + name + "?q=%20a"
				raw := rq.method + " " + target + " " + rq.proto + "\r\nHost: example.test\r\n" + rq.extra + "\r\n"
				want := exchange(t, std, rq.method, raw)
				got := exchange(t, hot.addr, rq.method, raw)
				if got.status != want.status || got.length != want.length || !slices.Equal(got.te, want.te) ||
					got.close != want.close || !bytes.Equal(got.body, want.body) || got.bodyErr != want.bodyErr || got.connOpen != want.connOpen {
					t.Errorf("lean loop answered\n%+v\nnet/http answered\n%+v", summary(got), summary(want))
				}
				if !equalHeaders(got.header, want.header) {
					t.Errorf("header fields differ:\nlean     %v\nnet/http %v", got.header, want.header)
				}
			})
		}
	}
}

func summary(r reply) reply {
	if len(r.body) > 64 {
		r.body = append(r.body[:64:64], "..."...)
	}
	return r
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// pathOf tells which server answered: net/http puts itself in the
// request's context.
func pathOf(r *http.Request) string {
	if r.Context().Value(http.ServerContextKey) != nil {
		return "fallback"
	}
	return "lean"
}

func markingHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Path", pathOf(r))
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(body))
	})
}

// TestWhoAnswers checks which requests the lean loop takes and that a
// connection handed to net/http keeps working there, including requests
// pipelined behind the one that caused the hand-off.
func TestWhoAnswers(t *testing.T) {
	s := start(t, Config{Handler: markingHandler(), Eligible: func(target string) bool { return strings.HasPrefix(target, "/get/") }})
	cases := []struct {
		name string
		raw  string
		want []string // "status path body" of each response, in order
	}{
		{"eligible GET", "GET /get/a HTTP/1.1\r\nHost: h\r\n\r\n", []string{"200 lean GET /get/a 0"}},
		{"eligible HEAD", "HEAD /get/a HTTP/1.1\r\nHost: h\r\n\r\n", []string{"200 lean "}},
		{"other path", "GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n", []string{"200 fallback GET /api/x 0"}},
		{"POST", "POST /get/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", []string{"200 fallback POST /get/a 3"}},
		{"chunked body", "GET /get/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", []string{"200 fallback GET /get/a 3"}},
		{"GET with body", "GET /get/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab", []string{"200 fallback GET /get/a 2"}},
		{"no host", "GET /get/a HTTP/1.1\r\n\r\n", []string{"400 "}},
		{"two hosts", "GET /get/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", []string{"400 "}},
		{"obs-fold", "GET /get/a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", []string{"200 fallback GET /get/a 0"}},
		{"bad header line", "GET /get/a HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n", []string{"400 "}},
		{"absolute form", "GET http://h/get/a HTTP/1.1\r\nHost: h\r\n\r\n", []string{"200 fallback GET /get/a 0"}},
		{"long head", "GET /get/a HTTP/1.1\r\nHost: h\r\nX-Long: " + strings.Repeat("x", 10000) + "\r\n\r\n", []string{"200 fallback GET /get/a 0"}},
		{"pipelined then hand-off", "GET /get/1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /get/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbodyGET /get/3 HTTP/1.1\r\nHost: h\r\n\r\n",
			[]string{"200 lean GET /get/1 0", "200 fallback POST /get/2 4", "200 fallback GET /get/3 0"}},
		{"pipelined lean", strings.Repeat("GET /get/p HTTP/1.1\r\nHost: h\r\n\r\n", 50), slices.Repeat([]string{"200 lean GET /get/p 0"}, 50)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.srv.Answered()
			br := bufio.NewReader(dialSend(t, s.addr, tc.raw))
			method := strings.Fields(tc.raw)[0]
			lean := 0
			for i, want := range tc.want {
				if strings.HasPrefix(want, "200 lean") {
					lean++
				}
				resp, err := http.ReadResponse(br, &http.Request{Method: method})
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				got := fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Path"))
				if resp.StatusCode == http.StatusOK {
					got += " " + string(body)
				}
				if got != want {
					t.Errorf("response %d = %q, want %q", i, got, want)
				}
			}
			if n := s.srv.Answered() - before; n != uint64(lean) {
				t.Errorf("Answered grew by %d, want %d (the lean answers)", n, lean)
			}
		})
	}
}

// TestClientTraffic runs Go's HTTP client (connection reuse, concurrency)
// against the lean loop with a large file served by sendfile.
func TestClientTraffic(t *testing.T) {
	data := make([]byte, 8<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(file)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		http.ServeContent(w, r, "f", time.Time{}, f)
	})
	s := start(t, Config{Handler: h})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				resp, err := http.Get("http://" + s.addr + "/f")
				if err != nil {
					bad.Add(1)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || sha256.Sum256(body) != want {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d downloads failed or differed", bad.Load())
	}
}

// TestPanicClosesOnlyThatConnection: a handler panic drops its connection
// and the server keeps serving.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		_, _ = io.WriteString(w, "ok")
	})
	s := start(t, Config{Handler: h})
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: h\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Fatal("a panicking handler produced a response")
	}
	resp, err := http.Get("http://" + s.addr + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("after a panic: %q", body)
	}
}

// TestTimeouts: an idle connection and a slowly sent head are closed.
func TestTimeouts(t *testing.T) {
	s := start(t, Config{Handler: markingHandler(), IdleTimeout: 200 * time.Millisecond, ReadHeaderTimeout: 200 * time.Millisecond})
	for _, send := range []string{"", "GET /get/a HTTP/1.1\r\nHost:"} {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, send)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("after sending %q: read %d, %v; want the server to close", send, n, err)
		}
		c.Close()
	}
}

// TestShutdown: idle connections close at once, a request being answered
// finishes, Serve returns ErrServerClosed, and new connections are refused.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/get/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done "+pathOf(r))
	})
	s := start(t, Config{Handler: h, Eligible: func(target string) bool { return strings.HasPrefix(target, "/get/") }})
	idle, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	_ = idle.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(idle, "GET /get/fast HTTP/1.1\r\nHost: h\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ibr, nil); err != nil {
		t.Fatal(err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	type result struct {
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + s.addr + "/get/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- result{string(b), err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(context.Background()) }()
	if _, err := ibr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection during shutdown: %v, want EOF", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request was being answered", err)
	default:
	}
	close(release)
	if r := <-slow; r.err != nil || r.body != "done lean" {
		t.Errorf("in-flight request: %q, %v", r.body, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-s.done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Error("a connection was accepted after Shutdown")
	}
}

// TestShutdownWaitsForHandedOff: a request on a handed-off connection is
// finished by the fallback's graceful shutdown.
func TestShutdownWaitsForHandedOff(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "done "+pathOf(r))
	})
	s := start(t, Config{Handler: h, Eligible: func(string) bool { return false }})
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + s.addr + "/x")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(context.Background()) }()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) before the handed-off request finished", err)
		default:
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(release)
	if b := <-got; b != "done fallback" {
		t.Errorf("handed-off request: %q", b)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestH2CGoesToFallback: an HTTP/2 prior-knowledge client (gRPC over h2c)
// is served by the fallback server.
func TestH2CGoesToFallback(t *testing.T) {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	h := markingHandler()
	s := start(t, Config{Handler: h, Fallback: &http.Server{Handler: h, Protocols: &protos}})
	var cp http.Protocols
	cp.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &cp}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + s.addr + "/get/a")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("X-Path") != "fallback" || string(body) != "GET /get/a 0" {
		t.Fatalf("h2c: %s %q %q", resp.Proto, resp.Header.Get("X-Path"), body)
	}
}

// echoHandler answers with everything a handler sees of a request head, so
// that two servers' transcripts differ whenever they read a head apart.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %q %q %q %s close=%v len=%d header=%q\n",
			r.Method, r.RequestURI, r.URL, r.Host, r.Proto, r.Close, r.ContentLength, r.Header)
	})
}

// transcript sends raw on a new connection without closing the sending
// side, and returns everything the server sent until it closed, with the
// Date fields cut out, and how the connection ended.
func transcript(t *testing.T, addr, raw string) string {
	t.Helper()
	got, err := io.ReadAll(dialSend(t, addr, raw))
	end := "EOF"
	if err != nil {
		end = err.Error()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			end = "still open"
		}
	}
	return dateField.ReplaceAllString(string(got), "") + "<" + end + ">"
}

var dateField = regexp.MustCompile(`(?m)^Date: [^\r\n]*\r\n`)

// TestRawHeadsAsNetHTTP sends raw byte sequences (pipelined requests,
// closes, bare LFs, odd Host and Content-Length fields) to the lean loop
// and to net/http with the same handler and timeouts, and requires the
// same bytes back, up to the connection's close.
func TestRawHeadsAsNetHTTP(t *testing.T) {
	const timeout = 500 * time.Millisecond // ends the connections kept open
	h := echoHandler()
	fallback := &http.Server{Handler: h, ReadHeaderTimeout: timeout, IdleTimeout: timeout}
	hot := start(t, Config{Handler: h, Fallback: fallback, ReadHeaderTimeout: timeout, IdleTimeout: timeout})
	std := startStdWith(t, &http.Server{Handler: h, ReadHeaderTimeout: timeout, IdleTimeout: timeout})
	const get = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, tc := range []struct{ name, raw string }{
		{"plain", get},
		// Pipelined requests and closes.
		{"close then a byte", "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nX"},
		{"close then a request", "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + get},
		{"complete then partial", get + "GET /b HTTP/1.1\r\nHo"},
		{"complete then one byte", get + "G"},
		{"two then partial", get + get + "GET /c"},
		{"HTTP/1.0 then pipelined", "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n"},
		{"HTTP/1.0 keep-alive then pipelined", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
		{"lean then handed off then close", get + "GET /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"},
		// Heads net/http reads its own way.
		{"bare LF", "GET /a HTTP/1.1\nHost: h\n\n"},
		{"bare LF ending", "GET /a HTTP/1.1\r\nHost: h\n\r\n"},
		{"bare LF inside a line", "GET /a HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n"},
		{"bare LF after a request", get + "GET /b HTTP/1.1\nHost: h\n\n"},
		{"leading empty line", "\r\n" + get},
		{"Host with a space", "GET /a HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{"Host with userinfo", "GET /a HTTP/1.1\r\nHost: u@h\r\n\r\n"},
		{"Host with a slash", "GET /a HTTP/1.1\r\nHost: h/x\r\n\r\n"},
		{"Host with obs-text", "GET /a HTTP/1.1\r\nHost: h\xe9\r\n\r\n"},
		{"HTTP/1.0 malformed Host", "GET /a HTTP/1.0\r\nHost: {h}\r\n\r\n"},
		{"empty Host", "GET /a HTTP/1.1\r\nHost:\r\n\r\n"},
		{"Content-Length 0 twice", "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"},
		{"Content-Length 0 and 1", "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\nx"},
		{"Pragma no-cache", "GET /a HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := transcript(t, std, tc.raw)
			if got := transcript(t, hot.addr, tc.raw); got != want {
				t.Errorf("for %q\nlean loop sent %q\nnet/http sent  %q", tc.raw, got, want)
			}
		})
	}
}

// TestCloseAfterAnswerLingers: a client that keeps sending after a request
// that closes the connection still gets the whole answer and a clean
// close, not a reset (the loop half-closes and drains, as net/http does
// when it closes on unread input).
func TestCloseAfterAnswerLingers(t *testing.T) {
	s := start(t, Config{Handler: echoHandler()})
	for _, first := range []string{
		"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
		"GET /a HTTP/1.0\r\n\r\n",
	} {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		trailing := bytes.Repeat([]byte("GET /more HTTP/1.1\r\nHost: h\r\n\r\n"), 3000) // ~100 KB the server never answers
		sent := make(chan error, 1)
		go func() {
			_, err := c.Write(append([]byte(first), trailing...))
			sent <- err
		}()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Contains(got, []byte("GET \"/a\"")) {
			t.Errorf("after %q and more bytes: read %q, %v; want the answer and a clean close", first, got, err)
		}
		<-sent
		c.Close()
	}
}
