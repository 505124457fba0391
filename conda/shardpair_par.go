package conda

import (
	"crypto/sha256"
	"errors"
	"sync"
	"sync/atomic"
)

// Transcoding on several cores (ScanOptions.Workers). The scanner stays
// one goroutine: it reads the document, checks its structure and every
// file name, and cuts each record's JSON out (its extent found by the same
// lenient scan that sizes the read window). Records go in chunks to
// workers, each with a pairTranscoder of its own, and the callback gets
// them back in document order from one goroutine. Transcoding was about
// three quarters of a scan (BenchmarkScanShardPairs), so a 500,000-record
// index scans in about half the time on two cores.
//
// What the callback sees is what the one-goroutine scan gives it: the same
// records in the same order, and for a document it refuses the first
// failure in document order (a record's transcoding failure comes before
// anything the scanner found later in the document). FuzzScanShardPairs
// runs both.

// pairChunkRecords and pairChunkBytes bound a chunk: enough records that
// handing them over costs little, few enough that chunks in flight stay a
// few megabytes.
const (
	pairChunkRecords = 256
	pairChunkBytes   = 1 << 20
)

// pairJob is one record of a chunk: its file name and its JSON at
// in[start:end].
type pairJob struct {
	fn         string
	parsed     Filename
	start, end int
}

// pairChunk is a run of records of one section, cut out by the scanner,
// transcoded by a worker, handed to the callback in order.
type pairChunk struct {
	section string // for the error of a record that fails its checks
	in      []byte
	jobs    []pairJob
	out     []byte // the records' shard entries and versions, back to back
	recs    []PairRecord
	err     error // the transcoding failure of recs[len(recs)] (the rest were not read)
	done    chan struct{}
}

// pairPipeline is the workers and the in-order delivery of one scan.
type pairPipeline struct {
	each    func(*PairRecord) error
	sumJSON bool
	work    chan *pairChunk
	ordered chan *pairChunk
	free    chan *pairChunk
	cur     *pairChunk
	stopped atomic.Bool // the delivery failed: the scanner stops
	err     error       // the delivery's failure, read after delivered closes
	workers sync.WaitGroup
	deliver chan struct{} // closed when the delivery ends
}

func newPairPipeline(workers int, sumJSON bool, each func(*PairRecord) error) *pairPipeline {
	inFlight := 2*workers + 2
	pp := &pairPipeline{
		each:    each,
		sumJSON: sumJSON,
		work:    make(chan *pairChunk, inFlight),
		ordered: make(chan *pairChunk, inFlight),
		free:    make(chan *pairChunk, inFlight+1),
		deliver: make(chan struct{}),
	}
	for range inFlight + 1 {
		pp.free <- &pairChunk{done: make(chan struct{}, 1)}
	}
	for range workers {
		pp.workers.Add(1)
		go pp.transcode()
	}
	go pp.deliverInOrder()
	return pp
}

// add queues the record fn (parsed) of section whose JSON is b. b is
// copied.
func (pp *pairPipeline) add(section, fn string, parsed Filename, b []byte) {
	c := pp.cur
	if c == nil || c.section != section {
		pp.flush()
		c = <-pp.free
		c.section, c.in, c.jobs, c.recs, c.err = section, c.in[:0], c.jobs[:0], c.recs[:0], nil
		pp.cur = c
	}
	start := len(c.in)
	c.in = append(c.in, b...)
	c.jobs = append(c.jobs, pairJob{fn: fn, parsed: parsed, start: start, end: len(c.in)})
	if len(c.jobs) >= pairChunkRecords || len(c.in) >= pairChunkBytes {
		pp.flush()
	}
}

// flush hands the chunk being filled to the workers.
func (pp *pairPipeline) flush() {
	if c := pp.cur; c != nil {
		pp.cur = nil
		pp.ordered <- c
		pp.work <- c
	}
}

// finish delivers what is queued and ends the pipeline: the first failure
// in document order, nil if every record was delivered.
func (pp *pairPipeline) finish() error {
	pp.flush()
	close(pp.work)
	close(pp.ordered)
	pp.workers.Wait()
	<-pp.deliver
	return pp.err
}

// errPipelineStopped stops the scanner once the delivery failed; finish
// returns the delivery's failure instead.
var errPipelineStopped = errors.New("conda: scan stopped")

func (pp *pairPipeline) transcode() {
	defer pp.workers.Done()
	p := &jsonParser{keys: map[string]string{}}
	t := &pairTranscoder{p: p}
	for c := range pp.work {
		c.out = c.out[:0]
		for _, j := range c.jobs {
			pair, err := t.one(c.section, j.fn, j.parsed, c.in[j.start:j.end])
			if err != nil {
				c.err = err
				break
			}
			// Slices taken before out grows keep pointing at the bytes
			// already written (the old array stays as it was).
			at := len(c.out)
			c.out = append(c.out, pair...)
			c.out = append(c.out, t.version...)
			c.recs = append(c.recs, PairRecord{
				Filename:    j.fn,
				Name:        j.parsed.Name,
				Conda:       j.parsed.Ext == ExtConda,
				Version:     c.out[at+len(pair) : len(c.out) : len(c.out)],
				BuildNumber: t.buildNumber,
				Pair:        c.out[at : at+len(pair) : at+len(pair)],
				JSON:        c.in[j.start:j.end],
			})
			if pp.sumJSON {
				c.recs[len(c.recs)-1].JSONSum = sha256.Sum256(c.in[j.start:j.end])
			}
		}
		c.done <- struct{}{}
	}
}

func (pp *pairPipeline) deliverInOrder() {
	defer close(pp.deliver)
	for c := range pp.ordered {
		<-c.done
		if pp.err == nil {
			for i := range c.recs {
				if err := pp.each(&c.recs[i]); err != nil {
					pp.err = err
					break
				}
			}
			if pp.err == nil && c.err != nil {
				pp.err = c.err
			}
			if pp.err != nil {
				pp.stopped.Store(true)
			}
		}
		pp.free <- c
	}
}
