package httpsyntax_test

import (
	"testing"

	"github.com/condamesh/condamesh/internal/httpsyntax"
	"golang.org/x/net/http/httpguts"
)

// TestAgreesWithHTTPGuts: the checks accept what x/net's httpguts accepts,
// for every single byte and a few longer names and values.
func TestAgreesWithHTTPGuts(t *testing.T) {
	var cases []string
	for c := range 256 {
		cases = append(cases, string([]byte{byte(c)}), "X-"+string([]byte{byte(c)})+"y")
	}
	cases = append(cases, "", "Content-Length", "a b", "caf\xc3\xa9", "tab\tin", "bell\x07")
	for _, s := range cases {
		if got, want := httpsyntax.Token(s), httpguts.ValidHeaderFieldName(s); got != want || httpsyntax.Token([]byte(s)) != want {
			t.Errorf("Token(%q) = %v, httpguts says %v", s, got, want)
		}
		if got, want := httpsyntax.FieldValue(s), httpguts.ValidHeaderFieldValue(s); got != want || httpsyntax.FieldValue([]byte(s)) != want {
			t.Errorf("FieldValue(%q) = %v, httpguts says %v", s, got, want)
		}
	}
}
