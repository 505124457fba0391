package upstream

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// wireAllowance is how many bytes on the wire a gzip body decoding to at
// most max bytes may take: deflate adds a few bytes per 64 KiB block of
// incompressible data, plus headers. Anything longer is padding (empty
// blocks or members) meant to keep the reader busy.
func wireAllowance(max int64) int64 { return max + max/64 + 64<<10 }

// body is a 200's body: gzip decoded when the upstream sent it so, with
// the decoded and the wire bytes bounded when max > 0.
type body struct {
	raw  io.ReadCloser
	r    io.Reader // what Read reads: raw, or the gzip stream over it
	wire *capReader
	gz   bool
}

func newBody(raw io.ReadCloser, gz bool, max int64, url string) io.ReadCloser {
	b := &body{raw: raw, gz: gz}
	var wire io.Reader = raw
	if max > 0 {
		allow := max
		if gz {
			allow = wireAllowance(max)
		}
		b.wire = &capReader{r: raw, left: allow, err: fmt.Errorf("%w: %s: more than %d bytes on the wire", ErrTooLarge, url, allow)}
		wire = b.wire
	}
	b.r = wire
	if gz {
		b.r = &lazyGzip{src: wire}
	}
	if max > 0 && gz {
		b.r = &capReader{r: b.r, left: max, err: fmt.Errorf("%w: %s: more than %d bytes", ErrTooLarge, url, max)}
	}
	return b
}

func (b *body) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *body) Close() error               { return b.raw.Close() }

// capReader passes at most left bytes on and fails with err once more
// arrive.
type capReader struct {
	r    io.Reader
	left int64
	err  error
}

func (c *capReader) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1] // one byte beyond tells a longer body from one exactly left long
	}
	n, err := c.r.Read(p)
	if int64(n) > c.left {
		n, c.left = int(c.left), 0
		return n, c.err
	}
	c.left -= int64(n)
	return n, err
}

// lazyGzip decodes a gzip stream whose header is read at the first Read,
// not when the response arrives.
type lazyGzip struct {
	src io.Reader
	zr  *gzip.Reader
	err error
}

func (z *lazyGzip) Read(p []byte) (int, error) {
	if z.zr == nil && z.err == nil {
		z.zr, z.err = gzip.NewReader(z.src)
	}
	if z.err != nil {
		return 0, z.err
	}
	return z.zr.Read(p)
}

// stallGuard cuts a response body whose Read waits idle for a byte: it
// cancels the request (which ends the blocked Read) and reports
// ErrTimeout. Only time spent inside Read counts, so a consumer that
// pauses between reads is not mistaken for a stalled upstream. Close
// releases the request.
type stallGuard struct {
	rc     io.ReadCloser
	idle   time.Duration
	cancel context.CancelFunc
	timer  *time.Timer
	fired  atomic.Bool
}

func newStallGuard(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *stallGuard {
	g := &stallGuard{rc: rc, idle: idle, cancel: cancel}
	g.timer = time.AfterFunc(idle, func() { g.fired.Store(true); cancel() })
	g.timer.Stop()
	return g
}

func (g *stallGuard) Read(p []byte) (int, error) {
	g.timer.Reset(g.idle)
	n, err := g.rc.Read(p)
	g.timer.Stop()
	if err != nil && g.fired.Load() {
		return n, fmt.Errorf("%w: the upstream sent nothing for %s", ErrTimeout, g.idle)
	}
	return n, err
}

func (g *stallGuard) Close() error {
	g.timer.Stop()
	err := g.rc.Close()
	g.cancel()
	return err
}
