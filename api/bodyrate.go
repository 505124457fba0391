package api

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// errSlowBody is a request body that fell below the minimum transfer rate.
var errSlowBody = errors.New("api: request body slower than the minimum transfer rate")

// rateBody is a request body that must keep up a minimum average rate: its
// next byte must arrive within grace plus one second per minRate bytes
// read so far, counted from the start, and within grace of now (a body
// that stalls after a fast start is cut too). A multi-GB upload on a slow
// link lasts as long as it needs; a body that trickles is cut once it
// falls behind. The deadline is the connection's read deadline, so a
// blocked read ends when it passes.
type rateBody struct {
	body    io.ReadCloser
	rc      *http.ResponseController
	start   time.Time
	grace   time.Duration
	minRate int64
	n       int64
	failed  bool
	done    bool // the body ended: no deadline is set any more
}

func (b *rateBody) deadline() time.Time {
	allowed := b.grace + time.Duration(float64(b.n+1)/float64(b.minRate)*float64(time.Second))
	d := b.start.Add(allowed)
	if idle := time.Now().Add(b.grace); idle.Before(d) {
		return idle
	}
	return d
}

func (b *rateBody) Read(p []byte) (int, error) {
	if b.failed {
		return 0, errSlowBody
	}
	if b.done {
		// A deadline armed now would outlive the body and cut net/http's
		// background read of the connection (cancelling the request).
		return b.body.Read(p)
	}
	if err := b.rc.SetReadDeadline(b.deadline()); err != nil {
		// The writer cannot set deadlines (an in-process test writer):
		// nothing to enforce.
		return b.body.Read(p)
	}
	n, err := b.body.Read(p)
	b.n += int64(n)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		b.failed = true
		return n, errSlowBody
	}
	if err != nil {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

func (b *rateBody) Close() error { return b.body.Close() }

// paceBody puts a request body under the minimum-rate rule.
func (s *Server) paceBody(w http.ResponseWriter, r *http.Request) {
	if s.cfg.BodyMinRate <= 0 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	r.Body = &rateBody{body: r.Body, rc: http.NewResponseController(w), start: time.Now(), grace: s.cfg.BodyGrace, minRate: s.cfg.BodyMinRate}
}
