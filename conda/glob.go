package conda

import (
	"fmt"
	"unicode/utf8"
)

// Glob is a compiled shell pattern with the semantics of Python's
// fnmatch.fnmatchcase, the globs conda users write in a mirror's
// includelist / excludelist: `*` matches any run of characters (also none,
// also '/'), `?` any one character, `[seq]` one character of seq and
// `[!seq]` one not in it. In a set, `a-z` is a range, a `]` first (after
// the `!`) is a member, a `-` first or last is a member, and a range whose
// ends are reversed is dropped. A `[` without a closing `]` is a literal
// `[`. There is no escape character. Matching is case-sensitive, by
// character (UTF-8; an invalid byte is one U+FFFD), and anchored at both
// ends.
type Glob struct {
	toks []globTok
}

type globKind uint8

const (
	globLit  globKind = iota // one character, r
	globAny                  // ?, or a negated empty set
	globStar                 // *
	globSet                  // [...]: a character in (or, neg, not in) lits / ranges
	globNone                 // an empty set: matches nothing
)

type globTok struct {
	kind   globKind
	r      rune
	neg    bool
	lits   []rune
	ranges [][2]rune
}

// CompileGlob compiles an fnmatch pattern. Every pattern compiles, as in
// Python; CheckGlob tells which ones are likely mistakes.
func CompileGlob(pattern string) *Glob {
	g, _ := compileGlob(pattern)
	return g
}

// MatchGlob reports whether name matches the fnmatch pattern.
func MatchGlob(pattern, name string) bool { return CompileGlob(pattern).Match(name) }

// HasGlobMeta reports whether s has a character special to fnmatch.
func HasGlobMeta(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '*' || c == '?' || c == '[' {
			return true
		}
	}
	return false
}

// CheckGlob refuses, with ErrBadGlob, an fnmatch pattern with a part
// Python would read other than as a set: a `[` without a closing `]`
// (fnmatch matches it literally) or a range whose ends are reversed
// (fnmatch drops it).
func CheckGlob(pattern string) error {
	_, err := compileGlob(pattern)
	return err
}

// compileGlob follows CPython's fnmatch.translate (3.11), noting the first
// mistake CheckGlob refuses.
func compileGlob(pattern string) (*Glob, error) {
	pat := []rune(pattern)
	g := &Glob{}
	var mistake error
	n := len(pat)
	for i := 0; i < n; {
		c := pat[i]
		i++
		switch c {
		case '*':
			if len(g.toks) == 0 || g.toks[len(g.toks)-1].kind != globStar {
				g.toks = append(g.toks, globTok{kind: globStar})
			}
		case '?':
			g.toks = append(g.toks, globTok{kind: globAny})
		case '[':
			j := i
			if j < n && pat[j] == '!' {
				j++
			}
			if j < n && pat[j] == ']' {
				j++
			}
			for j < n && pat[j] != ']' {
				j++
			}
			if j >= n {
				if mistake == nil {
					mistake = fmt.Errorf("%w: %q: '[' at %d has no closing ']'", ErrBadGlob, pattern, i-1)
				}
				g.toks = append(g.toks, globTok{kind: globLit, r: '['})
				continue
			}
			tok, reversed := compileSet(pat, i, j)
			if reversed && mistake == nil {
				mistake = fmt.Errorf("%w: %q: a range in the set at %d has its ends reversed", ErrBadGlob, pattern, i-1)
			}
			g.toks = append(g.toks, tok)
			i = j + 1
		default:
			g.toks = append(g.toks, globTok{kind: globLit, r: c})
		}
	}
	return g, mistake
}

// compileSet compiles the set pat[i:j] (between '[' and ']') as fnmatch
// does: it splits the set into chunks at the hyphens that make ranges,
// drops reversed ranges (reported), and reads each chunk's inner
// characters as members.
func compileSet(pat []rune, i, j int) (globTok, bool) {
	stuff := pat[i:j]
	var chunks [][]rune
	hasHyphen := false
	for _, r := range stuff {
		hasHyphen = hasHyphen || r == '-'
	}
	if !hasHyphen {
		chunks = [][]rune{append([]rune(nil), stuff...)}
	} else {
		k := i + 1
		if pat[i] == '!' {
			k = i + 2
		}
		for {
			k = indexRune(pat, '-', k, j)
			if k < 0 {
				break
			}
			chunks = append(chunks, append([]rune(nil), pat[i:k]...))
			i = k + 1
			k += 3
		}
		if last := pat[i:j]; len(last) > 0 {
			chunks = append(chunks, append([]rune(nil), last...))
		} else {
			chunks[len(chunks)-1] = append(chunks[len(chunks)-1], '-')
		}
	}
	reversed := false
	for k := len(chunks) - 1; k > 0; k-- {
		prev, cur := chunks[k-1], chunks[k]
		if prev[len(prev)-1] > cur[0] {
			reversed = true
			chunks[k-1] = append(prev[:len(prev)-1], cur[1:]...)
			chunks = append(chunks[:k], chunks[k+1:]...)
		}
	}
	// The members: chunk ends joined by a hyphen make ranges; every other
	// character is itself.
	tok := globTok{kind: globSet}
	if len(chunks) == 1 && len(chunks[0]) == 0 {
		return globTok{kind: globNone}, reversed
	}
	if len(chunks[0]) > 0 && chunks[0][0] == '!' {
		tok.neg = true
		chunks[0] = chunks[0][1:]
		if len(chunks[0]) == 0 {
			if len(chunks) == 1 {
				return globTok{kind: globAny}, reversed
			}
			// The '!' came from a dropped range and took the place of the
			// start of the next: that range's hyphen is a member (as
			// in `[^-0]`), and the next chunk starts the set.
			tok.lits = append(tok.lits, '-')
			chunks = chunks[1:]
		}
	}
	for k, ch := range chunks {
		lo, hi := 0, len(ch)
		if k > 0 {
			lo = 1 // the end of the range before
		}
		if k < len(chunks)-1 {
			hi = len(ch) - 1 // the start of the range after
			tok.ranges = append(tok.ranges, [2]rune{ch[len(ch)-1], chunks[k+1][0]})
		}
		if lo < hi {
			tok.lits = append(tok.lits, ch[lo:hi]...)
		}
	}
	return tok, reversed
}

func indexRune(s []rune, r rune, from, to int) int {
	for k := from; k < to; k++ {
		if s[k] == r {
			return k
		}
	}
	return -1
}

func (t *globTok) matches(r rune) bool {
	switch t.kind {
	case globLit:
		return r == t.r
	case globAny:
		return true
	case globSet:
		in := false
		for _, l := range t.lits {
			in = in || l == r
		}
		for _, rg := range t.ranges {
			in = in || rg[0] <= r && r <= rg[1]
		}
		return in != t.neg
	}
	return false // globNone
}

// Match reports whether the whole of name matches the pattern. It runs in
// O(len(pattern) * len(name)) at worst (one backtrack point: the last
// star).
func (g *Glob) Match(name string) bool {
	toks := g.toks
	p := 0               // next token
	n := 0               // next byte of name
	star, starN := -1, 0 // the last star's token, and where its run ends now
	for n < len(name) {
		if p < len(toks) && toks[p].kind == globStar {
			star, starN = p, n
			p++
			continue
		}
		r, size := utf8.DecodeRuneInString(name[n:])
		if p < len(toks) && toks[p].matches(r) {
			p++
			n += size
			continue
		}
		if star < 0 {
			return false
		}
		// Let the last star take one more character and try again.
		_, size = utf8.DecodeRuneInString(name[starN:])
		starN += size
		p, n = star+1, starN
	}
	for p < len(toks) && toks[p].kind == globStar {
		p++
	}
	return p == len(toks)
}
