package conda

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
)

// stdlibJSON is what parseJSON must match: encoding/json decoding one
// value into an `any` with UseNumber, and nothing but space after it.
func stdlibJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, io.ErrUnexpectedEOF // any error will do: only its presence is compared
	}
	return v, nil
}

var jsonSeeds = []string{
	``, ` `, `{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `01`, `1.`, `.5`, `-`, `1e`, `1e+`, `1E-7`, `-12.5e10`,
	`"plain"`, `"tab\there"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ude00\ud83d"`, `"\ud83dx"`, `"\ud83d\u0041"`,
	`"\ud83d\uZZZZ"`, `"\x"`, `"bad` + "\x01" + `"`, "\"\xff\xfe latin\"", "\"caf\xc3\xa9\"", `"unterminated`, `"\`,
	`{"a":1,"a":2}`, `{"a" : [1, {"b":null}] , "c":"d"}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a"}`, `{a:1}`, `{"a":1} x`, `{"a":1} `,
	` {"k":"v"}` + "\n\t\r", `tru`, `nul`, `falsey`, `[[[[[]]]]]`, strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000), `{"packages":{"a-1-0.tar.bz2":{"name":"a","depends":["b >=1"],"size":12}}}`,
}

// TestParseJSONMatchesEncodingJSON: the same trees and the same verdicts
// as encoding/json on valid, invalid and tricky inputs.
func TestParseJSONMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonSeeds {
		checkParseJSON(t, []byte(s))
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkParseJSON(t, b) })
}

func checkParseJSON(t *testing.T, b []byte) {
	t.Helper()
	want, werr := stdlibJSON(b)
	got, gerr := parseJSON(b)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%.200q: encoding/json says %v, parseJSON says %v", b, werr, gerr)
	}
	if werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%.200q: encoding/json gives %#v, parseJSON gives %#v", b, want, got)
	}
}
