package api

import (
	"net/http"
	"strings"
)

// gzipVariant reports whether the index file at p has a precomputed gzip
// form (p + ".gz") that a client asking for gzip gets instead, as
// Content-Encoding: gzip (Quetz and anaconda.org do the same).
func gzipVariant(p string) bool {
	return strings.HasSuffix(p, "/repodata.json") || strings.HasSuffix(p, "/current_repodata.json")
}

// acceptsGzip reports whether the Accept-Encoding fields of h admit gzip
// (RFC 9110 12.5.3): an element naming gzip or x-gzip with a q-value above
// 0, or, when none names it, a "*" element with a q-value above 0. No
// Accept-Encoding at all means identity: such clients keep getting the
// plain file.
func acceptsGzip(h http.Header) bool {
	named, star := 0, 0 // 0 unseen, 1 refused (q=0), 2 accepted
	for _, field := range h["Accept-Encoding"] {
		for field != "" {
			var elem string
			elem, field, _ = strings.Cut(field, ",")
			coding, params, _ := strings.Cut(elem, ";")
			coding = strings.TrimSpace(coding)
			var state *int
			switch {
			case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
				state = &named
			case coding == "*":
				state = &star
			default:
				continue
			}
			if qPositive(params) {
				*state = 2
			} else if *state == 0 {
				*state = 1
			}
		}
	}
	if named != 0 {
		return named == 2
	}
	return star == 2
}

// qPositive reads the q parameter of an Accept-Encoding element's
// parameters (after its first ';'): absent means 1. A malformed q-value
// counts as 0.
func qPositive(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, val, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		return qValueAboveZero(strings.TrimSpace(val))
	}
	return true
}

// qValueAboveZero parses an RFC 9110 qvalue ("0" ["." 0*3DIGIT] or "1"
// ["." 0*3("0")]) and reports whether it is above 0; anything else is
// treated as 0.
func qValueAboveZero(v string) bool {
	if v == "" || (v[0] != '0' && v[0] != '1') {
		return false
	}
	frac := v[1:]
	if frac != "" {
		if frac[0] != '.' || len(frac) > 4 {
			return false
		}
		frac = frac[1:]
	}
	positive := v[0] == '1'
	for i := 0; i < len(frac); i++ {
		c := frac[i]
		if c < '0' || c > '9' || (v[0] == '1' && c != '0') {
			return false
		}
		positive = positive || c != '0'
	}
	return positive
}
