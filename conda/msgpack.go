package conda

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// appendMsgpack appends the MessagePack encoding of the JSON-like value
// tree v to dst. Maps are written with their keys in byte order and
// integers in their smallest form, so equal trees give equal bytes.
// Supported: nil, bool, string, []byte (bin), json.Number, Go integer and
// float types, []any, []string, map[string]any and map[string]string.
func appendMsgpack(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, 0xc0), nil
	case bool:
		if x {
			return append(dst, 0xc3), nil
		}
		return append(dst, 0xc2), nil
	case string:
		return appendMsgpackString(dst, x), nil
	case []byte:
		return appendMsgpackBin(dst, x), nil
	case json.Number:
		return appendMsgpackNumber(dst, string(x)), nil
	case float64:
		return appendMsgpackFloat(dst, x), nil
	case float32:
		return appendMsgpackFloat(dst, float64(x)), nil
	case int:
		return appendMsgpackInt(dst, int64(x)), nil
	case int8:
		return appendMsgpackInt(dst, int64(x)), nil
	case int16:
		return appendMsgpackInt(dst, int64(x)), nil
	case int32:
		return appendMsgpackInt(dst, int64(x)), nil
	case int64:
		return appendMsgpackInt(dst, x), nil
	case uint:
		return appendMsgpackUint(dst, uint64(x)), nil
	case uint8:
		return appendMsgpackUint(dst, uint64(x)), nil
	case uint16:
		return appendMsgpackUint(dst, uint64(x)), nil
	case uint32:
		return appendMsgpackUint(dst, uint64(x)), nil
	case uint64:
		return appendMsgpackUint(dst, x), nil
	case []any:
		dst = appendMsgpackLen(dst, len(x), 0x90, 0xdc, 0xdd)
		var err error
		for _, e := range x {
			if dst, err = appendMsgpack(dst, e); err != nil {
				return nil, err
			}
		}
		return dst, nil
	case []string:
		dst = appendMsgpackLen(dst, len(x), 0x90, 0xdc, 0xdd)
		for _, e := range x {
			dst = appendMsgpackString(dst, e)
		}
		return dst, nil
	case map[string]any:
		dst = appendMsgpackLen(dst, len(x), 0x80, 0xde, 0xdf)
		var err error
		for _, k := range sortedKeys(x) {
			dst = appendMsgpackString(dst, k)
			if dst, err = appendMsgpack(dst, x[k]); err != nil {
				return nil, err
			}
		}
		return dst, nil
	case map[string]string:
		dst = appendMsgpackLen(dst, len(x), 0x80, 0xde, 0xdf)
		for _, k := range sortedKeys(x) {
			dst = appendMsgpackString(dst, k)
			dst = appendMsgpackString(dst, x[k])
		}
		return dst, nil
	}
	return nil, fmt.Errorf("msgpack: unsupported type %T", v)
}

// appendMsgpackLen writes an array or map header: fix (for n < 16), then
// 16-bit, then 32-bit length forms.
func appendMsgpackLen(dst []byte, n int, fix, b16, b32 byte) []byte {
	switch {
	case n < 16:
		return append(dst, fix|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, b16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(dst, b32), uint32(n))
	}
}

func appendMsgpackString[S string | []byte](dst []byte, s S) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

func appendMsgpackBin(dst []byte, b []byte) []byte {
	switch n := len(b); {
	case n <= math.MaxUint8:
		dst = append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		dst = binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
	}
	return append(dst, b...)
}

func appendMsgpackUint(dst []byte, n uint64) []byte {
	switch {
	case n <= 0x7f:
		return append(dst, byte(n))
	case n <= math.MaxUint8:
		return append(dst, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0xcf), n)
	}
}

func appendMsgpackInt(dst []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendMsgpackUint(dst, uint64(n))
	case n >= -32:
		return append(dst, byte(n))
	case n >= math.MinInt8:
		return append(dst, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(n))
	}
}

func appendMsgpackFloat(dst []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xcb), math.Float64bits(f))
}

// appendMsgpackNumber encodes a JSON number literal: integers as msgpack
// integers when they fit in 64 bits, everything else as float64. Text that
// is not a number at all is kept as a string.
func appendMsgpackNumber(dst []byte, s string) []byte {
	if !validJSONNumber(s) {
		return appendMsgpackString(dst, s)
	}
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return appendMsgpackInt(dst, i)
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return appendMsgpackUint(dst, u)
		}
	}
	f, _ := strconv.ParseFloat(s, 64) // valid literal; out of range gives ±Inf
	return appendMsgpackFloat(dst, f)
}
