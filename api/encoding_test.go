package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var qvalueRe = regexp.MustCompile(`^(0(\.[0-9]{0,3})?|1(\.0{0,3})?)$`)

// refAcceptsGzip is the oracle of FuzzAcceptsGzip: RFC 9110's rule written
// with whole-string splits, a regexp and ParseFloat.
func refAcceptsGzip(fields []string) bool {
	named, star := -1.0, -1.0 // best q seen, -1 none
	for _, f := range fields {
		for _, elem := range strings.Split(f, ",") {
			parts := strings.Split(elem, ";")
			coding := strings.ToLower(strings.TrimSpace(parts[0]))
			q := 1.0
			for _, p := range parts[1:] {
				k, v, _ := strings.Cut(p, "=")
				if strings.ToLower(strings.TrimSpace(k)) == "q" {
					v = strings.TrimSpace(v)
					q = 0
					if qvalueRe.MatchString(v) {
						q, _ = strconv.ParseFloat(v, 64)
					}
					break
				}
			}
			switch coding {
			case "gzip", "x-gzip":
				named = max(named, q)
			case "*":
				star = max(star, q)
			}
		}
	}
	if named >= 0 {
		return named > 0
	}
	return star > 0
}

// FuzzAcceptsGzip checks the Accept-Encoding scanner of the serving path
// against the oracle, for one and for two header lines.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"", "gzip", "gzip, deflate, br, zstd", "deflate, gzip;q=1.0, *;q=0.5", "gzip;q=0", "*;q=0.001", "x-gzip; Q=0.5", "gzip;q=1.0001", "gzip;q=.5", "identity;q=0, *", "gzip;foo=bar;q=0"} {
		f.Add(s, "")
		f.Add(s, "gzip;q=0")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, fields := range [][]string{{a}, {a, b}} {
			got := acceptsGzip(http.Header{"Accept-Encoding": fields})
			if want := refAcceptsGzip(fields); got != want {
				t.Fatalf("Accept-Encoding %q: got %v, want %v", fields, got, want)
			}
		}
	})
}
