package api

import (
	"slices"
	"strings"
	"testing"
)

// The words Python's shlex.split gives for the same inputs.
func TestShellSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a b", []string{"a", "b"}},
		{`a"b c"d`, []string{"ab cd"}},
		{`'x y' z`, []string{"x y", "z"}},
		{`"a\"b" c`, []string{`a"b`, "c"}},
		{`a\ b`, []string{"a b"}},
		{`""`, []string{""}},
		{`"a\x"`, []string{`a\x`}},
		{`x:"1,2" -y:3`, []string{"x:1,2", "-y:3"}},
		{"  lead  trail  ", []string{"lead", "trail"}},
	} {
		got, err := shellSplit(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("shellSplit(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`"open`, `'open`, `end\`} {
		if _, err := shellSplit(bad); err == nil {
			t.Errorf("shellSplit(%q): want an error", bad)
		}
	}
}

// shellQuote quotes w for shellSplit: single quotes, with each ' as '"'"'.
func shellQuote(w string) string { return "'" + strings.ReplaceAll(w, "'", `'"'"'`) + "'" }

// FuzzParseSearch parses untrusted ?q= values. Oracle: the split never
// panics, and quoting its words back gives the same words again.
func FuzzParseSearch(f *testing.F) {
	for _, s := range []string{"", "alpha NOT secret channel:two,one", `-private:false "a b" 'c'`, `a\ b "x\"y"`, "%41%zz", "NOT", "description:'x,y'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		for _, accepted := range []map[string]bool{packageFilters, channelFilters} {
			sq, err := parseSearch(q, accepted)
			if err != nil {
				continue
			}
			for _, fl := range sq.filters {
				if !accepted[fl.key] || len(fl.values) == 0 {
					t.Fatalf("filter %+v not accepted", fl)
				}
			}
			sq.nameMatches("name")
		}
		words, err := shellSplit(q)
		if err != nil {
			return
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = shellQuote(w)
		}
		again, err := shellSplit(strings.Join(quoted, " "))
		if err != nil || !slices.Equal(again, words) {
			t.Fatalf("%q: words %q, re-split of the quoted words %q, %v", q, words, again, err)
		}
	})
}
