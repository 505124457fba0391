package upstream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
)

// scripted is an HTTP/1.1 upstream on a real listener whose connection
// handling a test scripts: it reads requests with net/http's parser and
// answers them in order, and counts what it saw.
type scripted struct {
	t        *testing.T
	l        net.Listener
	conns    atomic.Int64 // connections accepted
	requests atomic.Int64 // requests read
	queued   atomic.Int64 // requests that had the next one already waiting: pipelining seen
	// answer writes the answer to the n-th request (from 1) of a
	// connection and says what becomes of the connection.
	answer func(w *bufio.Writer, r *http.Request, n int) then
}

// then is what a scripted upstream does after an answer.
type then int

const (
	keep   then = iota // read the next request
	linger             // close politely (see lingeringClose)
	drop               // close at once, resetting what the client sent since
)

func newScripted(t *testing.T, answer func(w *bufio.Writer, r *http.Request, n int) then) *scripted {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scripted{t: t, l: l, answer: answer}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go s.serve(c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	return s
}

func (s *scripted) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	for n := 1; ; n++ {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		s.requests.Add(1)
		if br.Buffered() > 0 {
			s.queued.Add(1)
		}
		more := s.answer(bw, r, n)
		if bw.Flush() != nil {
			return
		}
		switch more {
		case linger:
			s.lingeringClose(c)
			return
		case drop:
			return
		}
	}
}

// lingeringClose ends a connection the way careful servers do: it stops
// writing, then reads what the client still sends for a while, so that
// the client gets every answer written rather than a reset.
func (s *scripted) lingeringClose(c net.Conn) {
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, c)
}

func (s *scripted) url() string { return "http://" + s.l.Addr().String() + "/chan" }

func bodyOf(path string) string { return "contents of " + path }

func ok(w *bufio.Writer, r *http.Request, extra string) {
	b := bodyOf(r.URL.Path)
	fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s", len(b), extra, b)
}

// batch runs GetMany over n files and returns which were handled (with
// their right bytes) and which fell back.
func batch(t *testing.T, c *upstream.Client, ctx context.Context, base string, n int, m upstream.Many) (handled, fellBack map[string]int, err error) {
	t.Helper()
	var mu sync.Mutex
	handled, fellBack = map[string]int{}, map[string]int{}
	m.Base = base
	m.Handle = func(_ context.Context, it *upstream.Item, body io.Reader) error {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		p := it.Tag.(string)
		if string(b) != bodyOf(p) {
			return fmt.Errorf("%s: got %q", p, b)
		}
		mu.Lock()
		handled[p]++
		mu.Unlock()
		return nil
	}
	m.Fallback = func(it *upstream.Item) {
		mu.Lock()
		fellBack[it.Tag.(string)]++
		mu.Unlock()
	}
	in := make(chan *upstream.Item, n) // all waiting, as in a planned sync
	go func() {
		defer close(in)
		for i := range n {
			p := fmt.Sprintf("/chan/noarch/f-%d.conda", i)
			select {
			case in <- &upstream.Item{Request: upstream.Request{URL: strings.TrimSuffix(base, "/chan") + p, Authorization: "Bearer T"}, Tag: p}:
			case <-ctx.Done():
				return
			}
		}
	}()
	err = c.GetMany(ctx, in, m)
	return handled, fellBack, err
}

// TestGetManyPipelines: against upstreams that keep connections open,
// close them now and then (politely or not), refuse some files, cut one
// short or do not keep connections at all, every file is handled exactly
// once with its bytes or handed to the fallback exactly once, never both.
func TestGetManyPipelines(t *testing.T) {
	const files = 400
	cases := []struct {
		name   string
		answer func(w *bufio.Writer, r *http.Request, n int) then
		check  func(t *testing.T, s *scripted, handled, fellBack map[string]int)
	}{
		{"keep-alive", func(w *bufio.Writer, r *http.Request, n int) then {
			if r.Header.Get("Authorization") != "Bearer T" || r.Header.Get("User-Agent") != "condamesh" || r.Host == "" {
				fmt.Fprint(w, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				return keep
			}
			ok(w, r, "")
			return keep
		}, func(t *testing.T, s *scripted, handled, fellBack map[string]int) {
			if len(handled) != files || len(fellBack) != 0 {
				t.Errorf("handled %d, fell back %d of %d", len(handled), len(fellBack), files)
			}
			if s.conns.Load() > 4 || s.requests.Load() != files {
				t.Errorf("%d connections, %d requests: want at most 4 and exactly %d", s.conns.Load(), s.requests.Load(), files)
			}
			if s.queued.Load() < files/4 {
				t.Errorf("only %d requests found the next one waiting: not pipelined", s.queued.Load())
			}
		}},
		{"connection-close-every-7", func(w *bufio.Writer, r *http.Request, n int) then {
			if n == 7 {
				ok(w, r, "Connection: close\r\n")
				return linger
			}
			ok(w, r, "")
			return keep
		}, func(t *testing.T, s *scripted, handled, fellBack map[string]int) {
			if len(handled) != files || len(fellBack) != 0 {
				t.Errorf("handled %d, fell back %d of %d", len(handled), len(fellBack), files)
			}
			if s.conns.Load() < files/7 {
				t.Errorf("%d connections for %d files closed every 7", s.conns.Load(), files)
			}
		}},
		{"reset-every-5", func(w *bufio.Writer, r *http.Request, n int) then {
			ok(w, r, "")
			if n < 5 {
				return keep
			}
			return drop
		}, func(t *testing.T, s *scripted, handled, fellBack map[string]int) {
			if len(handled) < files/2 {
				t.Errorf("handled only %d of %d", len(handled), files)
			}
		}},
		{"no-keep-alive", func(w *bufio.Writer, r *http.Request, n int) then {
			b := bodyOf(r.URL.Path)
			fmt.Fprintf(w, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
			return linger
		}, func(t *testing.T, s *scripted, handled, fellBack map[string]int) {
			if len(fellBack) < files*3/4 {
				t.Errorf("fell back %d of %d: pipelining was not turned off", len(fellBack), files)
			}
			if s.conns.Load() > 4*8 {
				t.Errorf("%d connections before pipelining was turned off", s.conns.Load())
			}
		}},
		{"refusals-and-a-short-body", func(w *bufio.Writer, r *http.Request, n int) then {
			switch r.URL.Path {
			case "/chan/noarch/f-10.conda":
				fmt.Fprint(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
			case "/chan/noarch/f-11.conda":
				fmt.Fprint(w, "HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\noops\r\n0\r\n\r\n")
			case "/chan/noarch/f-12.conda":
				fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
				return drop
			case "/chan/noarch/f-13.conda":
				fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nX-Big: %s\r\n", strings.Repeat("x", 2<<20))
				return drop
			case "/chan/noarch/f-14.conda":
				fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nwrong!!")
			default:
				ok(w, r, "")
			}
			return keep
		}, func(t *testing.T, s *scripted, handled, fellBack map[string]int) {
			for i := 10; i <= 14; i++ {
				if p := fmt.Sprintf("/chan/noarch/f-%d.conda", i); fellBack[p] != 1 {
					t.Errorf("%s fell back %d times, want 1", p, fellBack[p])
				}
			}
			if len(handled) < files-5-2*16 {
				t.Errorf("handled only %d of %d", len(handled), files)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newScripted(t, tc.answer)
			c := upstream.New(upstream.Config{AttemptTimeout: 10 * time.Second})
			handled, fellBack, err := batch(t, c, context.Background(), s.url(), files, upstream.Many{Conns: 4, Depth: 8})
			if err != nil {
				t.Fatal(err)
			}
			for i := range files {
				p := fmt.Sprintf("/chan/noarch/f-%d.conda", i)
				if handled[p]+fellBack[p] != 1 {
					t.Errorf("%s: handled %d times, fell back %d times", p, handled[p], fellBack[p])
				}
			}
			tc.check(t, s, handled, fellBack)
		})
	}
}

// TestGetManyFallsBack: upstreams GetMany must not pipeline to get every
// item handed to the fallback, without a connection.
func TestGetManyFallsBack(t *testing.T) {
	s := newScripted(t, func(w *bufio.Writer, r *http.Request, n int) then { ok(w, r, ""); return keep })
	cases := map[string]struct {
		base string
		cfg  upstream.Config
	}{
		"https":              {base: "https://" + s.l.Addr().String() + "/chan"},
		"custom-transport":   {base: s.url(), cfg: upstream.Config{Transport: http.DefaultTransport}},
		"credentials-in-url": {base: "http://u:p@" + s.l.Addr().String() + "/chan"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			handled, fellBack, err := batch(t, upstream.New(tc.cfg), context.Background(), tc.base, 20, upstream.Many{})
			if err != nil || len(handled) != 0 || len(fellBack) != 20 {
				t.Fatalf("handled %d, fell back %d, err %v", len(handled), len(fellBack), err)
			}
		})
	}
	if s.conns.Load() != 0 {
		t.Fatalf("%d connections made", s.conns.Load())
	}
	t.Run("other-host", func(t *testing.T) {
		c := upstream.New(upstream.Config{})
		in := make(chan *upstream.Item, 1)
		in <- &upstream.Item{Request: upstream.Request{URL: "http://example.invalid/x"}}
		close(in)
		var fell atomic.Int64
		err := c.GetMany(context.Background(), in, upstream.Many{Base: s.url(),
			Handle:   func(context.Context, *upstream.Item, io.Reader) error { return errors.New("not expected") },
			Fallback: func(*upstream.Item) { fell.Add(1) }})
		if err != nil || fell.Load() != 1 {
			t.Fatalf("err %v, fell back %d", err, fell.Load())
		}
	})
}

// TestGetManyCancel: an upstream that never answers does not hold GetMany
// past its context.
func TestGetManyCancel(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	s := newScripted(t, func(w *bufio.Writer, r *http.Request, n int) then { <-block; return drop })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := batch(t, upstream.New(upstream.Config{}), ctx, s.url(), 50, upstream.Many{})
		done <- err
	}()
	waitUntil(t, func() bool { return s.requests.Load() > 0 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GetMany still running 10 s after its context was cancelled")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
