package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/store"
)

// liveLookup answers package look-ups from a derivation still running: a
// record the scan has passed is read back from the scratch file (through
// the scan's per-name offsets), one it has not reached yet is handed to
// the waiting look-up as the scan passes it, and once the scan has passed
// every record a file it did not see is known to be unlisted. So the first
// package asked for while a cold index is derived waits for the scan to
// reach its record, not for the whole set to be built and published.
type liveLookup struct {
	mu      sync.Mutex
	sc      *store.Scratch
	byName  map[string]*scannedName
	waiters map[string][]chan liveAnswer // by file name
	done    bool                         // every record passed
	ended   bool                         // the scratch file is gone: ask the set
}

// liveAnswer is what a look-up learns: decided says whether the answer
// holds (false: ask the published set once the derivation ends).
type liveAnswer struct {
	w       want
	found   bool
	decided bool
}

func newLiveLookup() *liveLookup {
	return &liveLookup{waiters: map[string][]chan liveAnswer{}}
}

// start gives the scan's scratch file and per-name offsets.
func (l *liveLookup) start(sc *store.Scratch, byName map[string]*scannedName) {
	l.mu.Lock()
	l.sc, l.byName = sc, byName
	l.mu.Unlock()
}

// add appends one scanned record to the scratch file, its name's offsets
// and digest, and answers the look-ups waiting for it.
func (l *liveLookup) add(r *conda.PairRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	off, err := l.sc.Append(r.Pair)
	if err != nil {
		return err
	}
	sn := l.byName[r.Name]
	if sn == nil {
		sn = &scannedName{sum: sha256.New(), raw: conda.NewNameDigest()}
		l.byName[r.Name] = sn
	}
	sn.refs = append(sn.refs, shardRef{off: off, n: uint32(len(r.Pair)), conda: r.Conda})
	sn.sum.Write(r.Pair)
	sn.raw.Add(r.Filename, r.JSONSum)
	if len(l.waiters) > 0 {
		if ws, ok := l.waiters[r.Filename]; ok {
			delete(l.waiters, r.Filename)
			a := liveAnswer{decided: true}
			if _, e, err := conda.ShardPairEntry(r.Pair); err == nil {
				a.w, a.found = entryWant(e)
			}
			for _, w := range ws {
				w <- a
			}
		}
	}
	return nil
}

// scanned says the scan passed every record: waiting look-ups learn
// their file is not listed. The scratch file is flushed, so that reads
// from here on write nothing.
func (l *liveLookup) scanned() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.sc.ReadAt(nil, 0); err != nil { // flushes
		return err
	}
	l.done = true
	for fn, ws := range l.waiters {
		for _, w := range ws {
			w <- liveAnswer{decided: true}
		}
		delete(l.waiters, fn)
	}
	return nil
}

// end says the derivation is over (published or failed): look-ups go to
// the set from now on.
func (l *liveLookup) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return
	}
	l.ended = true
	for fn, ws := range l.waiters {
		for _, w := range ws {
			w <- liveAnswer{}
		}
		delete(l.waiters, fn)
	}
}

// find looks fn (of package name) up, waiting for the scan to reach it.
func (l *liveLookup) find(ctx context.Context, name, fn string) (liveAnswer, error) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return liveAnswer{}, nil
	}
	if l.sc != nil {
		var pair []byte
		var refs []shardRef
		if sn := l.byName[name]; sn != nil {
			refs = sn.refs
		}
		for _, ref := range refs {
			pair = slices.Grow(pair[:0], int(ref.n))[:ref.n]
			if _, err := l.sc.ReadAt(pair, ref.off); err != nil {
				l.mu.Unlock()
				return liveAnswer{}, fmt.Errorf("proxy: read scratch file: %w", err)
			}
			if conda.ShardPairName(pair) != fn {
				continue
			}
			_, e, err := conda.ShardPairEntry(pair)
			l.mu.Unlock()
			if err != nil {
				return liveAnswer{decided: true}, nil
			}
			w, ok := entryWant(e)
			return liveAnswer{w: w, found: ok, decided: true}, nil
		}
	}
	if l.done {
		l.mu.Unlock()
		return liveAnswer{decided: true}, nil
	}
	ch := make(chan liveAnswer, 1)
	l.waiters[fn] = append(l.waiters[fn], ch)
	l.mu.Unlock()
	select {
	case a := <-ch:
		return a, nil
	case <-ctx.Done():
		return liveAnswer{}, ctx.Err()
	}
}
