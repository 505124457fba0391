package conda

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	v := map[string]any{
		"s":      "quote\" backslash\\ nl\n tab\t ctl\x01 html<>& uni é 𝄞 ls\u2028",
		"n":      json.Number("12345678901234567890"),
		"f":      1.5,
		"tiny":   1e-9,
		"huge":   1e22,
		"neg":    -3,
		"i64":    int64(math.MaxInt64),
		"u64":    uint64(math.MaxUint64),
		"b":      true,
		"null":   nil,
		"list":   []any{1, "two", []any{}, map[string]any{}},
		"strs":   []string{"a", "b"},
		"nested": map[string]any{"z": 1, "a": map[string]string{"y": "x"}},
	}
	for _, indent := range []bool{false, true} {
		got := appendJSON(nil, v, indent)
		var a, b any
		dec := json.NewDecoder(bytes.NewReader(got))
		dec.UseNumber()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("invalid JSON (indent=%v): %v\n%s", indent, err, got)
		}
		std, _ := json.Marshal(v)
		dec = json.NewDecoder(bytes.NewReader(std))
		dec.UseNumber()
		dec.Decode(&b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("indent=%v: decoded differently\n%s\n%s", indent, got, std)
		}
		if indent {
			var buf bytes.Buffer
			json.Indent(&buf, std, "", "  ")
			// encoding/json escapes <>&; ours does not. Compare after
			// normalising those escapes.
			norm := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(buf.String())
			if norm != string(got) {
				t.Errorf("indented output differs from encoding/json:\n%s\n%s", got, norm)
			}
		}
	}
	if got := string(appendJSON(nil, "\xff", false)); got != `"\ufffd"` {
		t.Errorf("invalid UTF-8 -> %s", got)
	}
	if got := string(appendJSON(nil, json.Number("nope"), false)); got != `"nope"` {
		t.Errorf("invalid number -> %s", got)
	}
	if got := string(appendJSON(nil, math.NaN(), false)); got != "null" {
		t.Errorf("NaN -> %s", got)
	}
	if got := string(appendJSON(nil, struct{ A int }{1}, false)); got != `{"A":1}` {
		t.Errorf("struct -> %s", got)
	}
	if got := string(appendJSON(nil, make(chan int), false)); got != "null" {
		t.Errorf("chan -> %s", got)
	}
}

func TestValidJSONNumber(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "12", "1.5", "-1.5e10", "1E+2", "0.0e-1"} {
		if !validJSONNumber(s) {
			t.Errorf("%q should be valid", s)
		}
	}
	for _, s := range []string{"", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x10", "1.5.5", "NaN", " 1"} {
		if validJSONNumber(s) {
			t.Errorf("%q should be invalid", s)
		}
	}
}

func TestMsgpackRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 70000)
	values := []any{
		nil, true, false, "", "short", strings.Repeat("y", 40), strings.Repeat("z", 300), long,
		[]byte{}, []byte{1, 2, 3}, bytes.Repeat([]byte{7}, 300), bytes.Repeat([]byte{8}, 70000),
		0, 1, 127, 128, 255, 256, 65535, 65536, math.MaxUint32, int64(math.MaxUint32) + 1, int64(math.MaxInt64),
		-1, -32, -33, -128, -129, -32768, -32769, math.MinInt32, int64(math.MinInt32) - 1, int64(math.MinInt64),
		uint64(math.MaxUint64), uint8(5), int8(-5), uint16(300), int16(-300), uint32(70000), int32(-70000), uint(9),
		1.5, float32(2.5), math.Inf(1),
		json.Number("42"), json.Number("-42"), json.Number("1.25"), json.Number("1e3"),
		json.Number("18446744073709551615"), json.Number("99999999999999999999"), json.Number("bad"),
		[]any{}, []any{1, "a", nil}, make([]any, 20), make([]any, 70000),
		[]string{"a", "b"}, map[string]string{"b": "2", "a": "1"},
		map[string]any{}, map[string]any{"b": 1, "a": []any{map[string]any{"c": nil}}},
	}
	big := map[string]any{}
	for i := range 20 {
		big[strings.Repeat("k", i+1)] = i
	}
	values = append(values, big)
	for _, v := range values {
		b, err := appendMsgpack(nil, v)
		if err != nil {
			t.Fatalf("%T: %v", v, err)
		}
		var got any
		if err := msgpack.Unmarshal(b, &got); err != nil {
			t.Fatalf("%T %.40v: decode: %v", v, v, err)
		}
		if !msgpackEqual(normalize(v), normalize(got)) {
			t.Errorf("round trip %T %.60v -> %.60v", v, v, got)
		}
	}
	if _, err := appendMsgpack(nil, struct{}{}); err == nil {
		t.Errorf("struct accepted")
	}
	if _, err := appendMsgpack(nil, map[string]any{"a": []any{struct{}{}}}); err == nil {
		t.Errorf("nested struct accepted")
	}
	// Keys are sorted: the same map always encodes the same way.
	m := map[string]any{}
	for _, k := range []string{"q", "w", "e", "r", "t", "y"} {
		m[k] = k
	}
	first, _ := appendMsgpack(nil, m)
	for range 20 {
		again, _ := appendMsgpack(nil, m)
		if !bytes.Equal(first, again) {
			t.Fatal("map encoding not deterministic")
		}
	}
	// Minimal integer forms.
	for n, want := range map[int64]int{0: 1, 127: 1, 128: 2, -32: 1, -33: 2, 256: 3, 1 << 20: 5, 1 << 40: 9} {
		b, _ := appendMsgpack(nil, n)
		if len(b) != want {
			t.Errorf("%d encoded in %d bytes, want %d", n, len(b), want)
		}
	}
}

// normalize maps a decoded or source value to comparable forms: all
// integers to int64/uint64, floats to float64, json.Number parsed.
func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		var out any
		b, _ := appendMsgpack(nil, x)
		msgpack.Unmarshal(b, &out)
		return normalize(out)
	case int:
		return int64(x)
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return x
	case float32:
		return float64(x)
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case map[string]string:
		out := map[string]any{}
		for k, e := range x {
			out[k] = e
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	}
	return v
}

func msgpackEqual(a, b any) bool {
	if ba, ok := a.([]byte); ok {
		bb, ok := b.([]byte)
		return ok && bytes.Equal(ba, bb)
	}
	return reflect.DeepEqual(a, b)
}
