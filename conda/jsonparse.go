package conda

import (
	"encoding/json"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// parseJSON decodes b as exactly one JSON value (surrounded by optional
// whitespace) into the tree encoding/json makes for an `any` with
// UseNumber: objects as map[string]any (the last of repeated keys wins),
// arrays as []any, numbers as json.Number, and strings unescaped with
// invalid UTF-8 and lone surrogates replaced by U+FFFD.
//
// Repodata documents are large (conda-forge's linux-64 is a quarter of a
// gigabyte) and decoding them with encoding/json was most of planning a
// mirror sync (BenchmarkParseRepodata10k); this parser does the same in a
// third of the time, mostly by not going through reflection and by
// sharing the strings of repeated object keys. FuzzParseJSON holds it to
// encoding/json's results, errors included.
func parseJSON(b []byte) (any, error) {
	p := jsonParser{b: b, keys: map[string]string{}}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.b) {
		return nil, p.fail("after top-level value")
	}
	return v, nil
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

var errJSONDepth error = &syntaxError{"exceeded max depth"}

// syntaxError is an error of the JSON itself (not of what it says).
type syntaxError struct{ msg string }

func (e *syntaxError) Error() string { return e.msg }

type jsonParser struct {
	b    []byte
	i    int
	keys map[string]string // object keys seen, to share their strings
	buf  []byte            // scratch for strings with escapes
}

func (p *jsonParser) fail(where string) error {
	if p.i >= len(p.b) {
		return &syntaxError{"unexpected end of JSON input"}
	}
	return &syntaxError{fmt.Sprintf("invalid character %q at offset %d %s", p.b[p.i], p.i, where)}
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (any, error) {
	if p.i >= len(p.b) {
		return nil, p.fail("looking for beginning of value")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		s, err := p.str(false)
		if err != nil {
			return nil, err
		}
		return s, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, p.fail("looking for beginning of value")
}

func (p *jsonParser) literal(word string) error {
	for k := 0; k < len(word); k++ {
		if p.i >= len(p.b) || p.b[p.i] != word[k] {
			return p.fail("in literal " + word)
		}
		p.i++
	}
	return nil
}

// object reads an object into a map. It is members written out for the
// hot path (every field of every record): a callback per member made
// BenchmarkParseRepodata10k 5-8 % slower.
func (p *jsonParser) object(depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	p.i++ // {
	m := map[string]any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return m, nil
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.fail("looking for beginning of object key string")
		}
		k, err := p.str(true)
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.fail("after object key")
		}
		p.i++
		p.space()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		m[k] = v
		p.space()
		if p.i >= len(p.b) {
			return nil, p.fail("after object key:value pair")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case '}':
			p.i++
			return m, nil
		default:
			return nil, p.fail("after object key:value pair")
		}
	}
}

func (p *jsonParser) array(depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errJSONDepth
	}
	p.i++ // [
	a := []any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return a, nil
	}
	for {
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		a = append(a, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, p.fail("after array element")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.space()
		case ']':
			p.i++
			return a, nil
		default:
			return nil, p.fail("after array element")
		}
	}
}

func (p *jsonParser) number() (any, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return nil, p.fail("in numeric literal")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.fail("after decimal point in numeric literal")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.fail("in exponent of numeric literal")
		}
	}
	return json.Number(p.b[start:p.i]), nil
}

// str reads a string; key says it is an object key, whose string is
// shared with earlier equal keys.
func (p *jsonParser) str(key bool) (string, error) {
	raw, err := p.strBytes()
	if err != nil {
		return "", err
	}
	if !key {
		return string(raw), nil
	}
	if s, ok := p.keys[string(raw)]; ok {
		return s, nil
	}
	s := string(raw)
	if len(p.keys) < 4096 {
		p.keys[s] = s
	}
	return s, nil
}

// strBytes reads a string and returns it unescaped: a slice of the input
// when it has no escapes and is ASCII, else of the parser's scratch buffer
// (valid until the next string read).
func (p *jsonParser) strBytes() ([]byte, error) {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return p.b[start : p.i-1], nil
		case c == '\\' || c >= utf8.RuneSelf:
			return p.slowStr(start)
		case c < ' ':
			return nil, p.fail("in string literal")
		}
		p.i++
	}
	return nil, p.fail("in string literal")
}

// slowStr finishes a string with escapes or non-ASCII bytes.
func (p *jsonParser) slowStr(start int) ([]byte, error) {
	out := append(p.buf[:0], p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			p.buf = out
			return out, nil
		case c < ' ':
			return nil, p.fail("in string literal")
		case c == '\\':
			p.i++
			if p.i >= len(p.b) {
				return nil, p.fail("in string escape code")
			}
			switch e := p.b[p.i]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := p.hex4(p.i + 1)
				if !ok {
					return nil, p.fail("in \\u hexadecimal character escape")
				}
				p.i += 4 // on the last hex digit
				if utf16.IsSurrogate(r) {
					// A pair when a second escape completes it;
					// otherwise U+FFFD, as encoding/json does.
					dec := utf8.RuneError
					if p.i+6 < len(p.b) && p.b[p.i+1] == '\\' && p.b[p.i+2] == 'u' {
						if r2, ok := p.hex4(p.i + 3); ok {
							dec = utf16.DecodeRune(r, r2)
						}
					}
					if dec != utf8.RuneError {
						p.i += 6
					}
					r = dec
				}
				out = utf8.AppendRune(out, r)
			default:
				return nil, p.fail("in string escape code")
			}
			p.i++
		case c < utf8.RuneSelf:
			out = append(out, c)
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, p.b[p.i:p.i+size]...)
			}
			p.i += size
		}
	}
	return nil, p.fail("in string literal")
}

// hex4 reads the four hex digits at b[at:].
func (p *jsonParser) hex4(at int) (rune, bool) {
	if at+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
