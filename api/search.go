package api

import (
	"errors"
	"net/http"
	"sort"
	"strings"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// maxSearchQuery bounds the ?q= of the search endpoints (bytes): matching
// costs terms × packages.
const maxSearchQuery = 1000

// searchQuery is a parsed ?q= of GET /api/packages/search/ and
// GET /api/channels/search/, in Quetz's syntax: words split like a POSIX
// shell (quotes group), every plain word must occur in the name
// (case-insensitive), "NOT word" excludes names containing word, and
// key:v1,v2 filters keep items matching any value (-key:... drops them).
// Filters a search type does not know are ignored, as in Quetz.
type searchQuery struct {
	words    []string
	excluded []string
	filters  []searchFilter
}

type searchFilter struct {
	key    string
	negate bool
	values []string
}

// Filters each search accepts.
var (
	packageFilters = map[string]bool{"channel": true, "description": true, "summary": true, "platform": true}
	channelFilters = map[string]bool{"description": true, "private": true}
)

// errSearchSyntax is the 422 of a query the shell-like split rejects (Quetz
// answers these with a 500).
var errSearchSyntax = errors.New("unbalanced quotes or a trailing backslash")

// parseSearch parses q for a search accepting the given filter keys.
func parseSearch(q string, accepted map[string]bool) (searchQuery, error) {
	var out searchQuery
	args, err := shellSplit(percentDecode(strings.TrimSpace(q)))
	if err != nil {
		return out, err
	}
	var words []string
	for _, arg := range args {
		if key, val, ok := strings.Cut(arg, ":"); ok {
			name, negate := strings.CutPrefix(key, "-")
			if accepted[name] {
				out.filters = append(out.filters, searchFilter{key: name, negate: negate, values: strings.Split(val, ",")})
			}
			continue
		}
		words = append(words, trimQuotes(arg))
	}
	// "NOT w" excludes w; w is then skipped wherever it recurs.
	var negated string
	hasNegated := false
	for i, w := range words {
		switch {
		case w == "NOT":
			if i+1 < len(words) {
				negated, hasNegated = words[i+1], true
				out.excluded = append(out.excluded, negated)
			}
		case hasNegated && w == negated:
		default:
			out.words = append(out.words, w)
		}
	}
	return out, nil
}

func trimQuotes(s string) string { return strings.Trim(strings.Trim(s, `"`), "'") }

// percentDecode decodes the valid %XX escapes of s and keeps everything
// else as it is (q arrives decoded once by the URL parser; Quetz decodes it
// once more).
func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// shellSplit splits s into words as a POSIX shell does (Python's
// shlex.split): whitespace separates words; single quotes keep everything
// literally; double quotes keep everything but \" and \\ escapes; outside
// quotes a backslash makes the next character literal.
func shellSplit(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errSearchSyntax
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errSearchSyntax
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errSearchSyntax
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// nameMatches applies the words and exclusions to a name.
func (q searchQuery) nameMatches(name string) bool {
	for _, w := range q.words {
		if !containsFold(name, w) {
			return false
		}
	}
	for _, w := range q.excluded {
		if containsFold(name, w) {
			return false
		}
	}
	return true
}

// filtersMatch applies every filter: value(key, v) says whether the item
// matches one value of the filter key.
func (q searchQuery) filtersMatch(value func(key, v string) bool) bool {
	for _, f := range q.filters {
		hit := false
		for _, v := range f.values {
			if value(f.key, trimQuotes(v)) {
				hit = true
				break
			}
		}
		if hit == f.negate {
			return false
		}
	}
	return true
}

// searchParam reads the required ?q= (FastAPI: missing is 422) and parses
// it.
func searchParam(r *http.Request, accepted map[string]bool) (searchQuery, error) {
	vals, ok := r.URL.Query()["q"]
	if !ok {
		return searchQuery{}, validation([]any{"query", "q"}, "missing", "Field required", nil)
	}
	q := vals[0]
	if len(q) > maxSearchQuery {
		return searchQuery{}, validation([]any{"query", "q"}, "string_too_long", "String should have at most 1000 characters", q)
	}
	sq, err := parseSearch(q, accepted)
	if err != nil {
		return sq, validation([]any{"query", "q"}, "value_error", "Value error, "+err.Error(), q)
	}
	for _, f := range sq.filters {
		if f.key != "private" {
			continue
		}
		for _, v := range f.values {
			if _, err := parseBool(nil, trimQuotes(v)); err != nil { // Python's strtobool, as Quetz reads private:...
				return sq, validation([]any{"query", "q"}, "value_error", "Value error, private: wants a boolean, got "+v, q)
			}
		}
	}
	return sq, nil
}

// channelSearchJSON is Quetz's ChannelSearch.
type channelSearchJSON struct {
	Name        string  `json:"name"`
	Description *string `json:"description"`
	Private     bool    `json:"private"`
}

// packageSearchJSON is Quetz's PackageSearch: a Package and its channel.
type packageSearchJSON struct {
	packageJSON
	ChannelName string `json:"channel_name"`
}

func lessFold(a, b string) bool {
	la, lb := strings.ToLower(a), strings.ToLower(b)
	if la != lb {
		return la < lb
	}
	return a < b
}

// restChannelSearch is GET /api/channels/search/?q=.
func (s *Server) restChannelSearch(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		q, err := searchParam(r, channelFilters)
		if err != nil {
			return 0, nil, err
		}
		chans, err := s.visibleChannels(r.Context(), id, false)
		if err != nil {
			return 0, nil, err
		}
		out := []channelSearchJSON{}
		for _, ch := range chans {
			ok := q.nameMatches(ch.Name) && q.filtersMatch(func(key, v string) bool {
				if key == "private" {
					b, _ := parseBool(nil, v)
					return ch.Private == b
				}
				return strings.Contains(ch.Description, v) // description
			})
			if ok {
				out = append(out, channelSearchJSON{Name: ch.Name, Description: strOrNil(ch.Description), Private: ch.Private})
			}
		}
		sort.Slice(out, func(i, j int) bool { return lessFold(out[i].Name, out[j].Name) })
		return http.StatusOK, out, nil
	})
}

// restPackageSearch is GET /api/packages/search/?q=.
func (s *Server) restPackageSearch(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		q, err := searchParam(r, packageFilters)
		if err != nil {
			return 0, nil, err
		}
		chans, err := s.visibleChannels(ctx, id, false)
		if err != nil {
			return 0, nil, err
		}
		out := []packageSearchJSON{}
		for _, ch := range chans {
			pkgs, err := s.cat.Packages(ctx, ch.Name)
			if err != nil {
				return 0, nil, err
			}
			var hits []*v1.Package
			for _, p := range pkgs {
				ok := q.nameMatches(p.Name) && q.filtersMatch(func(key, v string) bool {
					switch key {
					case "channel":
						return containsFold(ch.Name, v)
					case "description":
						return strings.Contains(p.Description, v)
					case "summary":
						return strings.Contains(p.Summary, v)
					}
					return containsFold(strings.Join(p.Platforms, ":"), v) // platform
				})
				if ok {
					hits = append(hits, p)
				}
			}
			if len(hits) == 0 {
				continue
			}
			vers, err := s.cat.Versions(ctx, ch.Name, "") // one scan for all hits
			if err != nil {
				return 0, nil, err
			}
			byPkg := map[string][]*v1.PackageVersion{}
			for _, v := range vers {
				byPkg[v.Package] = append(byPkg[v.Package], v)
			}
			for _, p := range hits {
				out = append(out, packageSearchJSON{packageJSON: packageJSONFrom(p, byPkg[p.Name]), ChannelName: ch.Name})
			}
		}
		sort.SliceStable(out, func(i, j int) bool { return lessFold(out[i].Name, out[j].Name) })
		return http.StatusOK, out, nil
	})
}
