// Package httpsyntax checks the pieces of HTTP/1.1 messages that the
// project's lean parsers accept (hotpath's requests, upstream's pipelined
// responses): field names and field values as RFC 9110 defines them.
package httpsyntax

// Token says whether b is a non-empty token (a field name).
func Token[T string | []byte](b T) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if c := b[i]; c >= 0x80 || !tokenChar[c] {
			return false
		}
	}
	return true
}

// FieldValue says whether b is field content: visible characters,
// spaces, tabs and obs-text, no other control character.
func FieldValue[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if c := b[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()
