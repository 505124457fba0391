package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Item is one file of a GetMany batch.
type Item struct {
	Request
	// Tag is the caller's; GetMany hands it back untouched.
	Tag any
	// lost counts the connections that broke with this item unanswered.
	lost int
}

// Many configures GetMany. Handle and Fallback are required.
type Many struct {
	// Base is the upstream channel URL the items are under. Items on
	// another scheme or host go to Fallback.
	Base string
	// Conns is the number of connections. Default 8.
	Conns int
	// Restricted dials only addresses Config.Restricted permits (the
	// items' requests say Restricted too, for their fallback).
	Restricted bool
	// Depth is the most requests in flight on one connection. Default 8.
	Depth int
	// Handle consumes the body of a 200 answer. It is called from several
	// connections at once. An error gives the item to Fallback (so it
	// must not have kept anything of the item then).
	Handle func(ctx context.Context, it *Item, body io.Reader) error
	// Fallback gets every item the pipelined connections did not complete:
	// any answer but 200, a Handle error, an item whose connection broke
	// twice before its answer, everything when the upstream is HTTPS,
	// behind a proxy or does not keep connections open. The caller fetches
	// those with Get, which retries, backs off and names the error. It may
	// block; it is called from several connections at once.
	Fallback func(it *Item)
}

const (
	defaultPipeConns = 8
	defaultPipeDepth = 8
	// maxResponseHead bounds a response's status line and header fields.
	maxResponseHead = 1 << 20
	// maxDrain is the most of an unwanted body read to keep a connection.
	maxDrain = 1 << 20
)

// GetMany fetches every item received from in, the way a mirror sync
// needs many small files of one upstream: over Conns keep-alive HTTP/1.1
// connections with up to Depth requests pipelined on each (RFC 9112
// §9.3.2; apt fetches the same way). Per file this saves a round trip and
// a system call on both ends, which is most of the cost of a small file.
//
// Responses are read in order (plain ones by a lean reader, the rest with
// net/http's parser); a connection that
// closes with requests unanswered (keepalive_requests reached, a reset)
// is replaced and the unanswered requests are sent again. An upstream
// that answers at most one request per connection turns pipelining off
// for the rest of the batch. Only plain http:// upstreams reached without
// a proxy are pipelined: HTTPS gets HTTP/2's multiplexing through Get
// instead, so GetMany hands all its items to Fallback.
//
// GetMany returns when in is closed and every item was handled or given
// to Fallback, or when ctx is done (with ctx's error).
func (c *Client) GetMany(ctx context.Context, in <-chan *Item, m Many) error {
	if m.Conns <= 0 {
		m.Conns = defaultPipeConns
	}
	if m.Depth <= 0 {
		m.Depth = defaultPipeDepth
	}
	base, ok := c.pipelinable(m.Base)
	p := &pipeline{c: c, m: m, in: in, base: base}
	if !ok {
		p.drain(ctx, nil)
		return ctx.Err()
	}
	var wg sync.WaitGroup
	for range m.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// pipelinable says whether requests under base may be pipelined, and
// returns its parsed URL.
func (c *Client) pipelinable(base string) (*url.URL, bool) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil || c.cfg.Transport != nil {
		return nil, false
	}
	if proxy, err := http.ProxyFromEnvironment(&http.Request{URL: u}); err != nil || proxy != nil {
		return nil, false
	}
	return u, true
}

// pipeline is the state GetMany's connections share.
type pipeline struct {
	c    *Client
	m    Many
	in   <-chan *Item
	base *url.URL
	off  atomic.Bool // the upstream does not keep connections open
}

// run serves items on one connection after another until in is drained.
func (p *pipeline) run(ctx context.Context) {
	var retry []*Item
	short := 0 // connections in a row that answered fewer than two requests
	for {
		if p.off.Load() || ctx.Err() != nil {
			p.drain(ctx, retry)
			return
		}
		conn, err := p.dial(ctx)
		if err != nil {
			// Unreachable now: Get's retries and backoff decide and report.
			p.c.log.Debug("pipelined fetch: dial", "host", p.base.Host, "err", err)
			p.off.Store(true)
			continue
		}
		var answered, sent int
		var more bool
		retry, answered, sent, more = p.serve(ctx, conn, retry)
		conn.Close()
		if !more {
			return
		}
		if answered < 2 && sent >= 2 {
			if short++; short >= 2 {
				p.c.log.Info("upstream does not keep connections open; fetching without pipelining", "host", p.base.Host)
				p.off.Store(true)
			}
		} else {
			short = 0
		}
	}
}

// drain gives retry and everything still to come from in to Fallback.
func (p *pipeline) drain(ctx context.Context, retry []*Item) {
	for _, it := range retry {
		p.m.Fallback(it)
	}
	for {
		select {
		case it, ok := <-p.in:
			if !ok {
				return
			}
			p.m.Fallback(it)
		case <-ctx.Done():
			return
		}
	}
}

func (p *pipeline) dial(ctx context.Context) (net.Conn, error) {
	addr := p.base.Host
	if p.base.Port() == "" {
		addr = net.JoinHostPort(p.base.Hostname(), "80")
	}
	d := net.Dialer{Timeout: p.c.cfg.AttemptTimeout, KeepAlive: 30 * time.Second}
	if p.m.Restricted {
		d.Control = p.c.cfg.Restricted.control
	}
	return d.DialContext(ctx, "tcp", addr)
}

// serve pipelines items on conn until it closes or there is no more work.
// It returns the items to send again on a new connection, how many
// requests were answered and sent, and whether there may be more work.
func (p *pipeline) serve(ctx context.Context, conn net.Conn, retry []*Item) (left []*Item, answered, sent int, more bool) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	dc := &deadlineConn{Conn: conn, idle: p.c.cfg.AttemptTimeout, headLeft: -1}
	br := bufio.NewReaderSize(dc, 64<<10)
	bw := bufio.NewWriterSize(dc, 16<<10)
	var pending []*Item
	closed := false // in is drained
	// broken: the connection is unusable with pending unanswered. Only
	// the first of them may be what broke it; the others were queued
	// behind it and are sent again as they are.
	broken := func() ([]*Item, int, int, bool) {
		for i, it := range pending {
			if i == 0 {
				it.lost++
			}
			if it.lost >= 2 || ctx.Err() != nil {
				p.m.Fallback(it)
			} else {
				retry = append(retry, it)
			}
		}
		return retry, answered, sent, true
	}
	for {
		for len(pending) < p.m.Depth {
			var it *Item
			switch {
			case len(retry) > 0:
				it, retry = retry[0], retry[1:]
			case closed:
			case len(pending) == 0: // nothing in flight: wait for work
				select {
				case v, ok := <-p.in:
					it, closed = v, !ok
				case <-ctx.Done():
					return retry, answered, sent, false
				}
			default:
				select {
				case v, ok := <-p.in:
					it, closed = v, !ok
				default:
				}
			}
			if it == nil {
				break
			}
			if !p.writeRequest(bw, it) {
				p.m.Fallback(it)
				continue
			}
			pending = append(pending, it)
			sent++
		}
		if len(pending) == 0 {
			return retry, answered, sent, !closed
		}
		if br.Buffered() == 0 { // about to wait: the upstream must have every request
			if err := bw.Flush(); err != nil {
				return broken()
			}
		}
		it := pending[0]
		dc.headLeft = maxResponseHead
		resp, err := readResponse(br)
		dc.headLeft = -1
		if err != nil || resp.status < 200 {
			return broken()
		}
		pending = pending[1:]
		answered++
		if resp.status == http.StatusOK {
			if err := p.m.Handle(ctx, it, resp.body); err != nil {
				p.m.Fallback(it)
			} else if p.c.cfg.Observe != nil {
				p.c.cfg.Observe("ok")
			}
		} else {
			p.m.Fallback(it)
		}
		if n, err := io.Copy(io.Discard, io.LimitReader(resp.body, maxDrain+1)); err != nil || n > maxDrain {
			return broken()
		}
		if resp.close { // the upstream ends the connection: send the rest again
			return append(retry, pending...), answered, sent, true
		}
	}
}

// writeRequest buffers it's GET; false if it cannot be pipelined here.
func (p *pipeline) writeRequest(bw *bufio.Writer, it *Item) bool {
	u, err := url.Parse(it.URL)
	if err != nil || u.Scheme != p.base.Scheme || u.Host != p.base.Host || u.User != nil {
		return false
	}
	for _, v := range []string{it.Authorization, it.IfNoneMatch, it.IfModifiedSince} {
		if strings.ContainsAny(v, "\r\n\x00") {
			return false
		}
	}
	bw.WriteString("GET ")
	bw.WriteString(u.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(u.Host)
	bw.WriteString("\r\nUser-Agent: condamesh\r\n")
	for _, h := range [...][2]string{{"Authorization", it.Authorization}, {"If-None-Match", it.IfNoneMatch}, {"If-Modified-Since", it.IfModifiedSince}} {
		if h[1] != "" {
			bw.WriteString(h[0])
			bw.WriteString(": ")
			bw.WriteString(h[1])
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return true
}

var errHeadTooLarge = errors.New("upstream: response head too large")

// deadlineConn gives every read and write an idle timeout (extended at
// most once a second), and bounds the bytes read for a response head.
type deadlineConn struct {
	net.Conn
	idle         time.Duration
	lastR, lastW time.Time
	headLeft     int // bytes a head may still use; -1 outside a head
}

func (d *deadlineConn) Read(b []byte) (int, error) {
	if now := time.Now(); now.Sub(d.lastR) > time.Second {
		_ = d.Conn.SetReadDeadline(now.Add(d.idle))
		d.lastR = now
	}
	if d.headLeft == 0 {
		return 0, errHeadTooLarge
	}
	if d.headLeft > 0 && len(b) > d.headLeft {
		b = b[:d.headLeft]
	}
	n, err := d.Conn.Read(b)
	if d.headLeft > 0 {
		d.headLeft -= n
	}
	return n, err
}

func (d *deadlineConn) Write(b []byte) (int, error) {
	if now := time.Now(); now.Sub(d.lastW) > time.Second {
		_ = d.Conn.SetWriteDeadline(now.Add(d.idle))
		d.lastW = now
	}
	return d.Conn.Write(b)
}
