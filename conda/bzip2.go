package conda

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"

	"github.com/dsnet/compress/bzip2"
)

// Bzip2 decoding of .tar.bz2 packages.
//
// Every .tar.bz2 is decoded with github.com/dsnet/compress/bzip2, not the
// standard library's compress/bzip2: it is 1.3–1.9× as fast here and it
// agrees with libbzip2 (what conda clients unpack with) where the standard
// library does not: of 20,000 randomly bit-flipped copies of one stream,
// the standard library accepted 97 that `bzip2 -t` and dsnet refuse
// (TestBzip2AgreesWithLibbzip2 keeps two such inputs).
//
// VerifyPackage also decodes the blocks of one stream on several cores
// (parallelBzip2, a hand-written replacement for the library's sequential
// reader). A bzip2 stream is a sequence of blocks, each starting with a
// 48-bit magic at an arbitrary bit offset and decodable on its own, and
// closed by a 48-bit end-of-stream magic and the combined CRC of its blocks.
// One goroutine scans the compressed bytes for both magics at every bit
// offset; each segment between two consecutive candidates is decoded on a
// worker, by the same library reader, as a stream of its own (the block's
// bits behind a "BZh<level>" header, then an end-of-stream marker). A
// segment decodes only if it is one whole block ending exactly where the
// next candidate starts, with its block CRC right. The reader hands out
// the blocks in order and accepts them only as a chain that starts at the
// first block, covers the stream without gap to its end-of-stream marker,
// whose combined CRC must match. Anything else (a magic that occurs by
// chance inside compressed data, corrupt or truncated input, a block over
// the size bounds below, a concatenated stream of another level) stops the
// parallel path: the rest comes from the sequential reader, restarted from
// the beginning with the bytes already handed out skipped, so the result
// (bytes, or an error) is always the sequential reader's. FuzzBzip2Parallel
// holds it to that. The worst case costs one sequential decode on top of
// the parallel part already done.
//
// The measured gain is in the package doc; VerifyOptions.Bzip2Workers = 1
// turns the parallel path off.

// bzip2 block and end-of-stream magics.
const (
	bz2BlockMagic = 0x314159265359
	bz2EndMagic   = 0x177245385090
)

// maxBz2Segment bounds the compressed bytes of one block the parallel
// path decodes; a longer segment (no valid block is: 900,000 symbols of at
// most 20 bits plus tables and selectors stay under 2.4 MB) goes to the
// sequential reader.
const maxBz2Segment = 4 << 20

// maxBz2BlockOut bounds the decoded bytes of one block a worker keeps; a
// block that decodes to more (long runs of one byte) is checked by the
// worker, then decoded again by the reader as it is read out.
const maxBz2BlockOut = 4 << 20

// bz2ScanChunk is how many compressed bytes the scanner reads at a time.
const bz2ScanChunk = 1 << 20

// newBzip2Reader decodes the bzip2 stream in r[0:size] with the sequential
// library reader (workers <= 1) or parallelBzip2. Close stops the
// goroutines of the parallel reader and waits for them: r is not read
// after Close returns.
func newBzip2Reader(r io.ReaderAt, size int64, workers int) io.ReadCloser {
	if workers <= 1 || size < 4 {
		return io.NopCloser(sequentialBzip2(r, size))
	}
	return newParallelBzip2(r, size, workers, bz2ScanChunk, nil)
}

// sequentialBzip2 is the library reader over r[0:size].
func sequentialBzip2(r io.ReaderAt, size int64) io.Reader {
	zr, _ := bzip2.NewReader(bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10), nil)
	return zr
}

// defaultBzip2Workers is the number of block decoders VerifyPackage uses
// when VerifyOptions.Bzip2Workers is zero.
func defaultBzip2Workers() int { return runtime.GOMAXPROCS(0) }

// bz2Job is one segment of the stream, from one magic candidate to the next.
type bz2Job struct {
	start int64 // bit offset of the candidate
	end   int64 // bit offset of the next candidate, -1 if none
	final bool  // the candidate is an end-of-stream magic
	done  chan struct{}

	// Set by the worker before done is closed.
	crc uint32 // the block CRC stored in the block
	out []byte // decoded block, unless big
	big bool   // decodes to more than maxBz2BlockOut
	err error  // not one whole block ending at end
}

// parallelBzip2 is an io.ReadCloser decoding the blocks of a bzip2 stream
// on several goroutines; see the comment at the top of this file.
type parallelBzip2 struct {
	r     io.ReaderAt
	size  int64
	level byte

	order chan *bz2Job // jobs in stream order, to Read
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	free  chan []byte // decoded-block buffers to reuse

	// Read's state.
	cur     *bz2Job
	head    []byte    // what is left of cur.out
	big     io.Reader // cur decoded again, when cur.big
	bigDec  *bz2Decoder
	pos     int64  // bit offset where the next block must start
	crc     uint32 // combined CRC of the blocks of the current stream
	emitted int64  // bytes handed out by the parallel path
	seq     io.Reader
	eof     bool
}

// newParallelBzip2 starts the scanner and the workers. extra, for tests,
// are bit offsets reported as block candidates besides the real ones.
func newParallelBzip2(r io.ReaderAt, size int64, workers, chunk int, extra []int64) *parallelBzip2 {
	p := &parallelBzip2{
		r:     r,
		size:  size,
		order: make(chan *bz2Job, workers+1),
		stop:  make(chan struct{}),
		free:  make(chan []byte, workers+3),
		pos:   32,
	}
	var hdr [4]byte
	if n, _ := r.ReadAt(hdr[:], 0); n < 4 || string(hdr[:3]) != "BZh" || hdr[3] < '1' || hdr[3] > '9' {
		p.fallback()
		return p
	}
	p.level = hdr[3]
	work := make(chan *bz2Job)
	p.wg.Add(1 + workers)
	go p.scan(work, chunk, extra)
	for range workers {
		go p.work(work)
	}
	return p
}

// Close stops the goroutines and waits for them.
func (p *parallelBzip2) Close() error {
	p.halt()
	p.wg.Wait()
	return nil
}

func (p *parallelBzip2) halt() { p.once.Do(func() { close(p.stop) }) }

// fallback switches to the sequential reader for the rest.
func (p *parallelBzip2) fallback() {
	p.halt()
	if p.seq == nil {
		p.seq = sequentialBzip2(p.r, p.size)
		if p.emitted > 0 {
			p.seq = &skipReader{r: p.seq, skip: p.emitted}
		}
	}
}

func (p *parallelBzip2) Read(b []byte) (int, error) {
	for {
		if p.seq != nil {
			return p.seq.Read(b)
		}
		if len(p.head) > 0 {
			n := copy(b, p.head)
			p.head = p.head[n:]
			p.emitted += int64(n)
			return n, nil
		}
		if p.big != nil {
			n, err := p.big.Read(b)
			p.emitted += int64(n)
			if err == io.EOF {
				p.big, err = nil, nil
			}
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		if p.eof {
			return 0, io.EOF
		}
		if len(b) == 0 {
			return 0, nil
		}
		p.next()
	}
}

// next takes the next job in order and moves the chain past it, or falls
// back to the sequential reader.
func (p *parallelBzip2) next() {
	if p.cur != nil && p.cur.out != nil {
		p.putBuf(p.cur.out)
	}
	p.cur = nil
	j, ok := <-p.order
	if !ok || j.start != p.pos {
		p.fallback()
		return
	}
	<-j.done
	p.cur = j
	if !j.final {
		if j.err != nil {
			p.fallback()
			return
		}
		p.crc = (p.crc<<1 | p.crc>>31) ^ j.crc
		p.pos = j.end
		if !j.big {
			p.head = j.out
			return
		}
		if p.bigDec == nil {
			p.bigDec = newBz2Decoder()
		}
		if err := p.bigDec.reset(p.r, j, p.level); err != nil {
			p.fallback()
			return
		}
		p.big = p.bigDec.zr
		return
	}
	// End of stream: its CRC, then either the end of the input or the
	// header of a concatenated stream of the same level.
	var tail [10]byte
	n, _ := p.r.ReadAt(tail[:], j.start/8+6)
	w := readBitsAt(tail[:n], int(j.start%8), 32)
	if n*8 < int(j.start%8)+32 || uint32(w) != p.crc {
		p.fallback()
		return
	}
	next := (j.start + 48 + 32 + 7) / 8
	if next == p.size {
		p.eof = true
		p.halt()
		return
	}
	var hdr [4]byte
	if n, _ := p.r.ReadAt(hdr[:], next); n < 4 || string(hdr[:]) != "BZh"+string(p.level) {
		p.fallback()
		return
	}
	p.pos, p.crc = (next+4)*8, 0
}

// readBitsAt returns the n bits (n <= 56) of b starting at bit off (< 8).
func readBitsAt(b []byte, off, n int) uint64 {
	var w [8]byte
	copy(w[:], b)
	return binary.BigEndian.Uint64(w[:]) << off >> (64 - n)
}

// scan reads the stream, finds the magic candidates and sends one job per
// candidate, in order, to p.order and (blocks) to work.
func (p *parallelBzip2) scan(work chan<- *bz2Job, chunk int, extra []int64) {
	defer p.wg.Done()
	defer close(work)
	defer close(p.order)
	var prev *bz2Job
	emit := func(bit int64, final bool) bool {
		if prev != nil {
			prev.end = bit
			if !p.send(prev, work) {
				return false
			}
		}
		prev = &bz2Job{start: bit, end: -1, final: final, done: make(chan struct{})}
		return true
	}
	buf := make([]byte, chunk+8)
	total := p.size * 8
	for off := int64(0); off < p.size; off += int64(chunk) {
		n, err := p.r.ReadAt(buf, off)
		if n < len(buf) && off+int64(n) < p.size {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			_ = err // the sequential reader reports it
			break
		}
		clear(buf[n:])
		limit := min(chunk, n)
		for i := 0; i < limit; i++ {
			shifts := bz2Filter[binary.BigEndian.Uint16(buf[i+1:])]
			if shifts == 0 {
				continue
			}
			w := binary.BigEndian.Uint64(buf[i:])
			for s := range uint(8) {
				final := false
				switch {
				case shifts&(1<<s) != 0 && w>>(16-s)&(1<<48-1) == bz2BlockMagic:
				case shifts&(1<<(8+s)) != 0 && w>>(16-s)&(1<<48-1) == bz2EndMagic:
					final = true
				default:
					continue
				}
				bit := (off+int64(i))*8 + int64(s)
				if bit < 32 || bit+48 > total {
					continue
				}
				for len(extra) > 0 && extra[0] < bit {
					if !emit(extra[0], false) {
						return
					}
					extra = extra[1:]
				}
				if !emit(bit, final) {
					return
				}
			}
		}
	}
	for _, bit := range extra {
		if !emit(bit, false) {
			return
		}
	}
	if prev != nil {
		p.send(prev, work)
	}
}

// send queues j in order and, for a block, to a worker.
func (p *parallelBzip2) send(j *bz2Job, work chan<- *bz2Job) bool {
	select {
	case p.order <- j:
	case <-p.stop:
		return false
	}
	if j.final {
		close(j.done)
		return true
	}
	select {
	case work <- j:
		return true
	case <-p.stop:
		j.err = errBz2Stopped
		close(j.done)
		return false
	}
}

var errBz2Stopped = errors.New("stopped")

// bz2Filter[v] has bit k set (k < 8: block magic, k >= 8: end magic, in
// both cases k%8 bits into a 64-bit window) when v is the window's second
// and third bytes, which the magic fills whatever the shift. Only 16 of
// the 65,536 values pass.
var bz2Filter = func() []uint16 {
	t := make([]uint16, 1<<16)
	for k := range 16 {
		magic := uint64(bz2BlockMagic)
		if k >= 8 {
			magic = bz2EndMagic
		}
		w := magic << (16 - uint(k%8))
		t[uint16(w>>40)] |= 1 << k
	}
	return t
}()

// work decodes jobs until the scanner stops.
func (p *parallelBzip2) work(jobs <-chan *bz2Job) {
	defer p.wg.Done()
	d := newBz2Decoder()
	for j := range jobs {
		select {
		case <-p.stop:
			j.err = errBz2Stopped
		default:
			p.decode(d, j)
		}
		close(j.done)
	}
}

// decode decodes j's segment as one whole block, keeping its output unless
// it is big.
func (p *parallelBzip2) decode(d *bz2Decoder, j *bz2Job) {
	if j.err = d.reset(p.r, j, p.level); j.err != nil {
		return
	}
	var out []byte
	select {
	case out = <-p.free:
	default:
		out = make([]byte, 0, 1<<20)
	}
	for {
		if len(out) == cap(out) {
			if cap(out) >= maxBz2BlockOut {
				j.big = true
				break
			}
			out = append(make([]byte, 0, min(2*cap(out), maxBz2BlockOut)), out...)
		}
		n, err := d.zr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			j.out = out
			return
		}
		if err != nil {
			j.err = err
			p.putBuf(out)
			return
		}
	}
	p.putBuf(out)
	if _, err := io.Copy(io.Discard, d.zr); err != nil {
		j.err = err
	}
}

// putBuf keeps b for another block if there is room.
func (p *parallelBzip2) putBuf(b []byte) {
	select {
	case p.free <- b[:0]:
	default:
	}
}

// bz2Decoder decodes one segment as a stream of its own.
type bz2Decoder struct {
	zr  *bzip2.Reader
	raw []byte // the segment's bytes as stored
	in  []byte // the stream made of them
	src bytes.Reader
}

func newBz2Decoder() *bz2Decoder {
	zr, _ := bzip2.NewReader(nil, nil)
	return &bz2Decoder{zr: zr}
}

// reset readies d.zr to decode j's segment: a "BZh<level>" header, the
// segment's bits, an end-of-stream magic and the block's own CRC as the
// stream's. The library reader then succeeds only if the segment is one
// block ending exactly at its end: had it ended earlier it would find
// stream bits that are no magic (there is no candidate in between); had
// it needed more, it would take the end magic for block data and find no
// end magic after it (TestBz2EndMagicNoSelfOverlap).
func (d *bz2Decoder) reset(r io.ReaderAt, j *bz2Job, level byte) error {
	if j.end < 0 {
		return errors.New("no block or end magic after the last block")
	}
	nbits := j.end - j.start
	if nbits < 80 || nbits > maxBz2Segment*8 {
		return errors.New("block segment out of bounds")
	}
	first, last := j.start/8, (j.end+7)/8
	d.raw = grow(d.raw, int(last-first)+1)
	raw := d.raw[:last-first]
	if n, err := r.ReadAt(raw, first); n < len(raw) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	raw = append(raw, 0) // read past the last byte by the shift below
	shift := uint(j.start % 8)
	j.crc = uint32(readBitsAt(raw[6:], int(shift), 32))
	nbytes := int((nbits + 7) / 8)
	d.in = grow(d.in, 4+nbytes+11)
	in := append(d.in[:0], 'B', 'Z', 'h', level)
	if shift == 0 {
		in = append(in, raw[:nbytes]...)
	} else {
		for i := range nbytes {
			in = append(in, raw[i]<<shift|raw[i+1]>>(8-shift))
		}
	}
	// The end magic and CRC right after the segment's last bit, then
	// zero padding to a byte.
	var acc uint64
	var accBits uint
	if tail := uint(nbits % 8); tail != 0 {
		acc, accBits = uint64(in[len(in)-1]>>(8-tail)), tail
		in = in[:len(in)-1]
	}
	for _, f := range [...]struct {
		v uint64
		n uint
	}{{bz2EndMagic, 48}, {uint64(j.crc), 32}} {
		acc = acc<<f.n | f.v
		accBits += f.n
		for accBits >= 8 {
			accBits -= 8
			in = append(in, byte(acc>>accBits))
		}
		acc &= 1<<accBits - 1
	}
	if accBits > 0 {
		in = append(in, byte(acc<<(8-accBits)))
	}
	d.src.Reset(in)
	return d.zr.Reset(&d.src)
}

// grow returns b or a new slice with capacity for n bytes.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:0]
	}
	return make([]byte, 0, n+n/4)
}

// skipReader drops the first skip bytes of r.
type skipReader struct {
	r    io.Reader
	skip int64
}

func (s *skipReader) Read(b []byte) (int, error) {
	if s.skip > 0 {
		if _, err := io.CopyN(io.Discard, s.r, s.skip); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		s.skip = 0
	}
	return s.r.Read(b)
}
