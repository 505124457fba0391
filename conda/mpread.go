package conda

import "errors"

// Bounded reading of untrusted MessagePack: an upstream's shard index and
// shards (ShardIndexDigests, ShardEntries). Every length a header claims
// is checked against the bytes left before anything is read or made, and
// nested values are skipped without recursion, so a document costs what
// it holds: nothing is allocated but what the caller keeps.
// vmihailenco/msgpack's Unmarshal sizes maps and buffers from the claimed
// lengths first: 4 KB of hostile input made it allocate 56 MB, and
// FuzzUpstreamShards drove a fuzzing worker past 9 GB within seconds. The
// library stays the reference: FuzzUpstreamShards checks that both read
// every well-formed document alike.

var errMsgpack = errors.New("malformed MessagePack")

type mpReader struct{ b []byte }

// head reads a value's first byte (its type, and for the fix types its
// length or value).
func (r *mpReader) head() (byte, bool) {
	if len(r.b) == 0 {
		return 0, false
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c, true
}

// be reads an n-byte big-endian unsigned number.
func (r *mpReader) be(n int) (uint64, bool) {
	if len(r.b) < n {
		return 0, false
	}
	var v uint64
	for _, c := range r.b[:n] {
		v = v<<8 | uint64(c)
	}
	r.b = r.b[n:]
	return v, true
}

// length reads a header's n-byte length and checks that at least
// min(length*per, ...) bytes are left for what it announces.
func (r *mpReader) length(n, per int) (int, error) {
	v, ok := r.be(n)
	if !ok || v > uint64(len(r.b)/per) {
		return 0, errMsgpack
	}
	return int(v), nil
}

// mapLen reads a map header: the number of key/value pairs (-1 for nil).
func (r *mpReader) mapLen() (int, error) {
	c, ok := r.head()
	if !ok {
		return 0, errMsgpack
	}
	switch {
	case c&0xf0 == 0x80:
		if int(c&0x0f) > len(r.b)/2 {
			return 0, errMsgpack
		}
		return int(c & 0x0f), nil
	case c == 0xde:
		return r.length(2, 2)
	case c == 0xdf:
		return r.length(4, 2)
	case c == 0xc0:
		return -1, nil
	}
	return 0, errMsgpack
}

// arrayLen reads an array header if one is next (ok), else reads nothing.
func (r *mpReader) arrayLen() (n int, ok bool, err error) {
	if len(r.b) == 0 {
		return 0, false, nil
	}
	switch c := r.b[0]; {
	case c&0xf0 == 0x90:
		r.b = r.b[1:]
		if int(c&0x0f) > len(r.b) {
			return 0, true, errMsgpack
		}
		return int(c & 0x0f), true, nil
	case c == 0xdc:
		r.b = r.b[1:]
		n, err = r.length(2, 1)
		return n, true, err
	case c == 0xdd:
		r.b = r.b[1:]
		n, err = r.length(4, 1)
		return n, true, err
	}
	return 0, false, nil
}

// bytes reads a string or binary value (nil reads as empty): its payload,
// aliasing the input.
func (r *mpReader) bytes() ([]byte, error) {
	c, ok := r.head()
	if !ok {
		return nil, errMsgpack
	}
	n := 0
	var err error
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.length(1, 1)
	case c == 0xda || c == 0xc5:
		n, err = r.length(2, 1)
	case c == 0xdb || c == 0xc6:
		n, err = r.length(4, 1)
	case c == 0xc0:
		return nil, nil
	default:
		return nil, errMsgpack
	}
	if err != nil || n > len(r.b) {
		return nil, errMsgpack
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v, nil
}

// int reads an integer (nil reads as 0); a uint64 above int64's range
// wraps, as the reference reads it (a negative size is no valid record).
func (r *mpReader) int() (int64, error) {
	c, ok := r.head()
	if !ok {
		return 0, errMsgpack
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c == 0xc0:
		return 0, nil
	case c >= 0xcc && c <= 0xcf: // uint8..uint64
		v, ok := r.be(1 << (c - 0xcc))
		if !ok {
			return 0, errMsgpack
		}
		return int64(v), nil
	case c >= 0xd0 && c <= 0xd3: // int8..int64
		n := 1 << (c - 0xd0)
		v, ok := r.be(n)
		if !ok {
			return 0, errMsgpack
		}
		shift := 64 - 8*n
		return int64(v<<shift) >> shift, nil
	}
	return 0, errMsgpack
}

// skip passes over one value of any type, nested ones included, without
// recursion.
func (r *mpReader) skip() error {
	for pending := 1; pending > 0; pending-- {
		c, ok := r.head()
		if !ok {
			return errMsgpack
		}
		var (
			n     int // payload bytes to pass
			items int // values that follow
			err   error
		)
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c&0xf0 == 0x80:
			items = 2 * int(c&0x0f)
		case c&0xf0 == 0x90:
			items = int(c & 0x0f)
		case c&0xe0 == 0xa0:
			n = int(c & 0x1f)
		case c == 0xc4, c == 0xd9:
			n, err = r.length(1, 1)
		case c == 0xc5, c == 0xda:
			n, err = r.length(2, 1)
		case c == 0xc6, c == 0xdb:
			n, err = r.length(4, 1)
		case c == 0xc7:
			n, err = r.length(1, 1)
			n++ // the type byte
		case c == 0xc8:
			n, err = r.length(2, 1)
			n++
		case c == 0xc9:
			n, err = r.length(4, 1)
			n++
		case c == 0xca:
			n = 4
		case c == 0xcb:
			n = 8
		case c >= 0xcc && c <= 0xcf:
			n = 1 << (c - 0xcc)
		case c >= 0xd0 && c <= 0xd3:
			n = 1 << (c - 0xd0)
		case c >= 0xd4 && c <= 0xd8: // fixext 1..16, plus the type byte
			n = 1<<(c-0xd4) + 1
		case c == 0xdc:
			items, err = r.length(2, 1)
		case c == 0xdd:
			items, err = r.length(4, 1)
		case c == 0xde:
			items, err = r.length(2, 2)
			items *= 2
		case c == 0xdf:
			items, err = r.length(4, 2)
			items *= 2
		default: // 0xc1, never used
			return errMsgpack
		}
		if err != nil || n > len(r.b) || items > len(r.b)-n {
			return errMsgpack
		}
		r.b = r.b[n:]
		pending += items // at most the bytes left: no overflow
	}
	return nil
}
