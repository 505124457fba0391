package hotpath

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config configures a Server. Handler and Fallback are required.
type Config struct {
	// Handler answers the requests the lean loop accepts. It is the same
	// handler the Fallback server runs, so both paths answer alike.
	Handler http.Handler
	// Fallback serves every connection from its first request the lean
	// loop does not take (see Eligible) to its end: uploads, API calls,
	// h2c, anything unusual. Its Handler is normally Handler.
	Fallback *http.Server
	// Eligible reports whether a GET or HEAD of target (the raw request
	// target, origin-form) may be served by the lean loop. Nil means every
	// bodiless GET and HEAD.
	Eligible func(target string) bool
	// ReadHeaderTimeout bounds reading one request head. Default 10 s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection. Default 120 s.
	IdleTimeout time.Duration
	// Logger receives handler panics. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports a missing required field.
func (c *Config) Validate() error {
	if c.Handler == nil {
		return errors.New("hotpath: Config.Handler is required")
	}
	if c.Fallback == nil {
		return errors.New("hotpath: Config.Fallback is required")
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("hotpath: server closed")

// Server accepts connections, serves their eligible requests itself and
// hands each connection to Fallback at its first other request.
type Server struct {
	cfg     Config
	handoff *connListener
	closing atomic.Bool
	// answered counts the requests the lean loop answered itself.
	answered atomic.Uint64
	mu       sync.Mutex
	ln       net.Listener
	conns    map[*conn]struct{}
}

// New returns a Server; it panics on an invalid Config (a wiring bug).
func New(cfg Config) *Server {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg.setDefaults()
	return &Server{cfg: cfg, conns: map[*conn]struct{}{}}
}

// Serve accepts connections on ln until Shutdown or Close, and runs the
// Fallback server on the connections handed to it.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.ln = ln
	s.handoff = newConnListener(ln.Addr())
	s.mu.Unlock()
	go func() { _ = s.cfg.Fallback.Serve(s.handoff) }() // ends when Shutdown or Close closes handoff
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if retryable(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay) // accept backoff, as net/http does
				continue
			}
			return err
		}
		delay = 0
		hc := newConn(s, c)
		if !s.track(hc) {
			_ = c.Close()
			return ErrServerClosed
		}
		go hc.serve()
	}
}

// Answered is the number of requests the lean loop has answered itself
// (those of handed-off connections are not counted): how much of the
// traffic takes the lean path, and for tests, that it does.
func (s *Server) Answered() uint64 { return s.answered.Load() }

// retryable reports an accept error that passes (out of file descriptors,
// an aborted connection): net/http retries these too.
func retryable(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED)
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, waits for requests
// being answered to finish (closing their connections afterwards), then
// shuts the Fallback server down the same way. ctx bounds the wait.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() {
			break
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return errors.Join(ctx.Err(), s.cfg.Fallback.Close())
		case <-tick.C:
		}
	}
	return s.cfg.Fallback.Shutdown(ctx)
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.beginClose()
	s.closeAll()
	return s.cfg.Fallback.Close()
}

func (s *Server) beginClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Swap(true) {
		return
	}
	if s.ln != nil {
		_ = s.ln.Close()
	}
}

// closeIdle closes connections waiting for a request and reports whether
// none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.Load() == stateIdle {
			c.close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.close()
	}
}

// Connection states: idle between requests (closable on shutdown), active
// while a request is read or answered.
const (
	stateIdle int32 = iota
	stateActive
)

type conn struct {
	srv    *Server
	rwc    net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	state  atomic.Int32
	ctx    context.Context
	cancel context.CancelFunc
	closed sync.Once
	remote string

	// Reused by every request of the connection, one at a time.
	req   *request
	base  *http.Request // carries ctx; copied into hreq per request
	hreq  http.Request
	resp  response
	rhead http.Header
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, headMax) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

func newConn(s *Server, c net.Conn) *conn {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c)
	hc := &conn{srv: s, rwc: c, br: br, bw: bw, remote: c.RemoteAddr().String()}
	hc.ctx, hc.cancel = context.WithCancel(context.WithValue(context.Background(), http.LocalAddrContextKey, c.LocalAddr()))
	hc.req = newRequest()
	hc.base = (&http.Request{}).WithContext(hc.ctx)
	hc.rhead = make(http.Header, 8)
	return hc
}

func (c *conn) close() {
	c.closed.Do(func() {
		c.cancel()
		_ = c.rwc.Close()
	})
}

// release returns the buffers to their pools once nothing reads them.
func (c *conn) release() {
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
}

// serve runs the request loop of one connection.
//
// Answers are written to c.bw and sent before the loop waits for bytes:
// an answer is held back only while the next request is already complete
// in the buffer (pipelined answers then share writes), and everything
// answered is sent before the connection closes or is handed off. The
// waits are net/http's: ReadHeaderTimeout for the first head from the
// connection's start, then IdleTimeout for the first bytes of each next
// request and ReadHeaderTimeout for the rest of its head.
func (c *conn) serve() {
	handedOff, linger := false, false
	defer func() {
		if !handedOff {
			c.finish(linger)
			c.release()
		}
		c.srv.untrack(c)
	}()
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.srv.cfg.Logger.Error("hotpath: handler panic", "remote", c.remote, "panic", v, "stack", string(debug.Stack()))
		}
	}()
	c.state.Store(stateIdle) // nothing read yet
	_ = c.rwc.SetReadDeadline(time.Now().Add(c.srv.cfg.ReadHeaderTimeout))
	for first := true; ; first = false {
		if c.srv.closing.Load() {
			return
		}
		if !first && c.br.Buffered() < 4 {
			if c.bw.Flush() != nil {
				return
			}
			c.state.Store(stateIdle)
			if c.srv.closing.Load() {
				return // Shutdown may have looked before the state changed
			}
			_ = c.rwc.SetReadDeadline(time.Now().Add(c.srv.cfg.IdleTimeout))
			// As net/http: wait for four bytes, and end quietly if they
			// do not come.
			if _, err := c.br.Peek(4); err != nil {
				return
			}
			_ = c.rwc.SetReadDeadline(time.Now().Add(c.srv.cfg.ReadHeaderTimeout))
		} else if !first {
			_ = c.rwc.SetReadDeadline(time.Now().Add(c.srv.cfg.ReadHeaderTimeout))
		}
		head, err := c.peekHead()
		if err != nil {
			if c.br.Buffered() > 0 {
				// Part of a head, then a timeout or EOF: net/http decides
				// between a 400 and a quiet close from what it reads.
				handedOff = c.handOff(err)
			}
			return
		}
		if !parseRequest(head, c.req) || !c.srv.eligible(c.req) {
			handedOff = c.handOff(nil)
			return
		}
		_, _ = c.br.Discard(len(head))
		c.srv.answered.Add(1)
		_ = c.rwc.SetReadDeadline(time.Time{})
		if !c.answer(c.req) {
			linger = c.resp.err == nil // answered; the client may still be sending
			return
		}
	}
}

// peekHead returns the buffered bytes of the next request head, through
// its empty line, without consuming them. It sends the answers written so
// far before it waits for more bytes, and marks the connection active
// once a byte of the head is read. A head longer than the buffer yields
// nil (parseRequest refuses it and the Fallback server answers it).
func (c *conn) peekHead() ([]byte, error) {
	for {
		if c.br.Buffered() > 0 {
			c.state.Store(stateActive)
		}
		buf, _ := c.br.Peek(c.br.Buffered())
		if n := headEnd(buf); n > 0 {
			return buf[:n], nil
		}
		if c.br.Buffered() >= headMax {
			return nil, nil
		}
		if err := c.bw.Flush(); err != nil {
			return nil, err
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			return nil, err
		}
	}
}

// Closing after an answer, the loop half-closes and reads what the client
// still sends for up to lingerTime or lingerMax bytes, as net/http does
// when it closes on unread input: closing a socket with unread bytes
// resets the connection, and a reset can destroy the answer in the
// client's receive buffer before the client reads it.
const (
	lingerTime = 500 * time.Millisecond
	lingerMax  = 256 << 10
)

// finish sends what was answered and closes the connection; after an
// answer (linger) it half-closes first and drains the client's bytes.
func (c *conn) finish(linger bool) {
	if c.bw.Flush() != nil {
		linger = false
	}
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); linger && ok && cw.CloseWrite() == nil {
		c.state.Store(stateIdle) // Shutdown need not wait for the drain
		_ = c.rwc.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, c.rwc, lingerMax)
	}
	c.close()
}

// handOff flushes what was answered and gives the connection, with the
// bytes already buffered, to the Fallback server. A non-nil readErr is
// what reading the connection ended with: the Fallback gets it once the
// buffered bytes are read, as if it had met it itself.
func (c *conn) handOff(readErr error) bool {
	if err := c.bw.Flush(); err != nil {
		return false
	}
	if readErr == nil {
		_ = c.rwc.SetReadDeadline(time.Time{})
	}
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
	c.bw = nil
	return c.srv.handoff.give(&bufferedConn{Conn: c.rwc, br: c.br, err: readErr})
}

func (s *Server) eligible(r *request) bool {
	return s.cfg.Eligible == nil || s.cfg.Eligible(r.target)
}

// bufferedConn is a connection whose first bytes were already read into
// br; reads drain br first (bufio reads large buffers straight from the
// connection once br is empty), then return err if it is set. br is not
// returned to the pool: the fallback server may still be reading when it
// closes the connection.
type bufferedConn struct {
	net.Conn
	br  *bufio.Reader
	err error
}

func (b *bufferedConn) Read(p []byte) (int, error) {
	if b.err != nil && b.br.Buffered() == 0 {
		return 0, b.err
	}
	return b.br.Read(p)
}

// connListener is the net.Listener the Fallback server accepts handed-off
// connections from.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		_ = c.Close()
		return true // closed: nothing left for the caller to release
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
