package proxy

import (
	"io"
	"runtime"
	"sync"
)

// followBuffer is the most of a download a follower keeps for a client
// that has not taken it yet.
const followBuffer = 4 << 20

// follower passes a cold package download on to the client that asked for
// it, from a goroutine of its own, so that the download (and every other
// client waiting for the file) never waits for that client. What the client
// has not taken yet is buffered up to followBuffer; a client further behind
// gets the rest from the stored file once the download is verified. All but
// the last byte go out while the file downloads, the last one only once it
// is verified and stored: a client never receives the whole of a file that
// turns out to be corrupt, it sees the response cut short.
type follower struct {
	w    io.Writer
	size int64

	mu      sync.Mutex
	more    *sync.Cond
	buf     []byte // downloaded, not yet written to the client
	behind  bool   // buf overflowed: the rest comes from the stored file
	started bool   // Write was called
	done    bool
	rest    func(off int64) (io.ReadCloser, error) // the stored file from off; nil if the download failed

	finished chan struct{}
}

// newFollower starts writing to w, the body of a response of size bytes.
func newFollower(w io.Writer, size int64) *follower {
	f := &follower{w: w, size: size, finished: make(chan struct{})}
	f.more = sync.NewCond(&f.mu)
	go f.run()
	return f
}

// Write takes downloaded bytes; it never blocks on the client.
func (f *follower) Write(p []byte) (int, error) {
	f.mu.Lock()
	if !f.behind {
		if len(f.buf)+len(p) > followBuffer {
			f.behind = true
		} else {
			idle := len(f.buf) == 0
			f.buf = append(f.buf, p...)
			if idle {
				f.more.Signal()
			}
		}
	}
	first := !f.started
	f.started = true
	f.mu.Unlock()
	if first {
		runtime.Gosched() // the client's first bytes go out now, not at the next preemption
	}
	return len(p), nil
}

// finish says the file is verified and stored; rest opens it at an offset.
func (f *follower) finish(rest func(off int64) (io.ReadCloser, error)) {
	f.mu.Lock()
	f.done, f.rest = true, rest
	f.more.Signal()
	f.mu.Unlock()
}

// abort says the download failed: the client's response stays cut short.
func (f *follower) abort() {
	f.mu.Lock()
	f.done = true
	f.more.Signal()
	f.mu.Unlock()
}

// wait returns once the client has been written all it will get.
func (f *follower) wait() { <-f.finished }

func (f *follower) run() {
	defer close(f.finished)
	var sent int64
	var spare []byte
	for {
		f.mu.Lock()
		for len(f.buf) == 0 && !f.done {
			f.more.Wait()
		}
		chunk := f.buf
		f.buf = spare[:0]
		done, rest := f.done, f.rest
		f.mu.Unlock()
		if len(chunk) > 0 {
			if room := max(f.size-1-sent, 0); int64(len(chunk)) > room {
				chunk = chunk[:room] // the last byte waits for the verification
			}
			if _, err := f.w.Write(chunk); err != nil {
				f.quit()
				return
			}
			sent += int64(len(chunk))
			spare = chunk
			continue
		}
		if !done {
			continue
		}
		if rest != nil { // verified and stored: the rest, the last byte included
			if r, err := rest(sent); err == nil {
				_, _ = io.CopyN(f.w, r, f.size-sent)
				r.Close()
			}
		}
		return
	}
}

// quit stops taking bytes for a client that is gone.
func (f *follower) quit() {
	f.mu.Lock()
	f.behind, f.buf = true, nil
	f.mu.Unlock()
}
