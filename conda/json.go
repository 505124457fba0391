package conda

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// decodeObject decodes b as exactly one JSON object, keeping numbers as
// json.Number.
func decodeObject(b []byte) (map[string]any, error) {
	v, err := parseJSON(b)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// jsonEncoder writes a JSON value tree deterministically: object keys
// sorted, no HTML escaping, and it never fails. Invalid json.Number values
// are written as strings, NaN and infinities as null, and unknown types via
// encoding/json (null if that fails).
type jsonEncoder struct {
	buf    []byte
	indent bool
}

// appendJSON appends the JSON form of v to dst, compact or indented with
// two spaces per level.
func appendJSON(dst []byte, v any, indent bool) []byte {
	e := jsonEncoder{buf: dst, indent: indent}
	e.value(v, 0)
	return e.buf
}

func (e *jsonEncoder) newline(depth int) {
	if !e.indent {
		return
	}
	e.buf = append(e.buf, '\n')
	for range depth {
		e.buf = append(e.buf, ' ', ' ')
	}
}

func (e *jsonEncoder) value(v any, depth int) {
	switch x := v.(type) {
	case nil:
		e.buf = append(e.buf, "null"...)
	case bool:
		e.buf = strconv.AppendBool(e.buf, x)
	case string:
		e.buf = appendJSONString(e.buf, x)
	case json.Number:
		if validJSONNumber(string(x)) {
			e.buf = append(e.buf, x...)
		} else {
			e.buf = appendJSONString(e.buf, string(x))
		}
	case float64:
		e.buf = appendJSONFloat(e.buf, x)
	case float32:
		e.buf = appendJSONFloat(e.buf, float64(x))
	case int:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int8:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int16:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int32:
		e.buf = strconv.AppendInt(e.buf, int64(x), 10)
	case int64:
		e.buf = strconv.AppendInt(e.buf, x, 10)
	case uint:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint8:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint16:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint32:
		e.buf = strconv.AppendUint(e.buf, uint64(x), 10)
	case uint64:
		e.buf = strconv.AppendUint(e.buf, x, 10)
	case []byte:
		e.buf = append(e.buf, '"')
		e.buf = base64.StdEncoding.AppendEncode(e.buf, x)
		e.buf = append(e.buf, '"')
	case []any:
		e.array(len(x), func(i int) any { return x[i] }, depth)
	case []string:
		e.array(len(x), func(i int) any { return x[i] }, depth)
	case map[string]any:
		e.object(sortedKeys(x), func(k string) any { return x[k] }, depth)
	case map[string]string:
		e.object(sortedKeys(x), func(k string) any { return x[k] }, depth)
	case rawJSON:
		e.buf = append(e.buf, x...)
	case *encodedObject:
		// object asks for each value in the order of the keys, just
		// before it writes the value.
		x.offs = x.offs[:0]
		e.object(x.keys, func(string) any {
			x.offs = append(x.offs, len(e.buf))
			return x.values[len(x.offs)-1]
		}, depth)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			b = []byte("null")
		}
		e.buf = append(e.buf, b...)
	}
}

func (e *jsonEncoder) array(n int, elem func(int) any, depth int) {
	if n == 0 {
		e.buf = append(e.buf, "[]"...)
		return
	}
	e.buf = append(e.buf, '[')
	for i := range n {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.newline(depth + 1)
		e.value(elem(i), depth+1)
	}
	e.newline(depth)
	e.buf = append(e.buf, ']')
}

func (e *jsonEncoder) object(keys []string, val func(string) any, depth int) {
	if len(keys) == 0 {
		e.buf = append(e.buf, "{}"...)
		return
	}
	e.buf = append(e.buf, '{')
	for i, k := range keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.newline(depth + 1)
		e.buf = appendJSONString(e.buf, k)
		e.buf = append(e.buf, ':')
		if e.indent {
			e.buf = append(e.buf, ' ')
		}
		e.value(val(k), depth+1)
	}
	e.newline(depth)
	e.buf = append(e.buf, '}')
}

// sortedKeys returns the keys of m in byte order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// appendJSONFloat formats f as encoding/json does; NaN and infinities
// become null.
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Turn e-09 into e-9, as encoding/json does.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD; '<', '>' and '&' are left alone.
func appendJSONString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// validJSONNumber reports whether s is a JSON number literal.
func validJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
