package conda

import (
	"cmp"
	"html"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// FileEntry is one file listed on a subdir index page.
type FileEntry struct {
	Name   string
	Size   int64
	SHA256 string // lowercase hex, may be empty
}

// PackageSummary is one package listed on a channel index page.
type PackageSummary struct {
	Name    string
	Version string // latest version
	Summary string
	License string
	Subdirs []string
}

// SubdirIndexHTML returns a plain HTML page listing the files of one
// subdir, sorted by name, each linked relative to the page, with size and
// SHA-256. All text is escaped; the output is deterministic.
func SubdirIndexHTML(channel, subdir string, files []FileEntry) []byte {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b FileEntry) int { return cmp.Compare(a.Name, b.Name) })
	var b strings.Builder
	title := channel + "/" + subdir
	writeHTMLHead(&b, title)
	b.WriteString("<p><a href=\"../\">../</a></p>\n")
	b.WriteString("<table>\n<tr><th>Filename</th><th>Size</th><th>SHA256</th></tr>\n")
	for _, f := range files {
		b.WriteString("<tr><td><a href=\"")
		b.WriteString(html.EscapeString(url.PathEscape(f.Name)))
		b.WriteString("\">")
		b.WriteString(html.EscapeString(f.Name))
		b.WriteString("</a></td><td>")
		b.WriteString(strconv.FormatInt(f.Size, 10))
		b.WriteString("</td><td><code>")
		b.WriteString(html.EscapeString(f.SHA256))
		b.WriteString("</code></td></tr>\n")
	}
	b.WriteString("</table>\n</body>\n</html>\n")
	return []byte(b.String())
}

// ChannelIndexHTML returns a plain HTML page for a channel: links to its
// subdirs (sorted, "noarch" always included) and a table of packages
// sorted by name. All text is escaped; the output is deterministic.
func ChannelIndexHTML(channel string, subdirs []string, pkgs []PackageSummary) []byte {
	set := map[string]bool{"noarch": true}
	for _, s := range subdirs {
		set[s] = true
	}
	pkgs = slices.Clone(pkgs)
	slices.SortFunc(pkgs, func(a, b PackageSummary) int { return cmp.Compare(a.Name, b.Name) })
	var b strings.Builder
	writeHTMLHead(&b, channel)
	b.WriteString("<h2>Subdirs</h2>\n<ul>\n")
	for _, s := range sortedKeys(set) {
		b.WriteString("<li><a href=\"")
		b.WriteString(html.EscapeString(url.PathEscape(s)))
		b.WriteString("/\">")
		b.WriteString(html.EscapeString(s))
		b.WriteString("</a></li>\n")
	}
	b.WriteString("</ul>\n<h2>Packages</h2>\n<table>\n")
	b.WriteString("<tr><th>Name</th><th>Version</th><th>Subdirs</th><th>License</th><th>Summary</th></tr>\n")
	for _, p := range pkgs {
		subs := slices.Clone(p.Subdirs)
		slices.Sort(subs)
		b.WriteString("<tr>")
		for _, cell := range []string{p.Name, p.Version, strings.Join(subs, ", "), p.License, p.Summary} {
			b.WriteString("<td>")
			b.WriteString(html.EscapeString(cell))
			b.WriteString("</td>")
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n</body>\n</html>\n")
	return []byte(b.String())
}

// PackageSummaries derives the channel index listing from the same inputs
// as ChannelData: one entry per package name with its latest version,
// summary, license and subdirs, sorted by name.
func PackageSummaries(recs map[string][]Record, about map[string]map[string]any) []PackageSummary {
	pkgs := channelPackages(recs, about)
	out := make([]PackageSummary, 0, len(pkgs))
	for _, name := range sortedKeys(pkgs) {
		p := pkgs[name].(map[string]any)
		s := PackageSummary{Name: name}
		s.Version, _ = p["version"].(string)
		s.Summary, _ = p["summary"].(string)
		s.License, _ = p["license"].(string)
		s.Subdirs, _ = p["subdirs"].([]string)
		out = append(out, s)
	}
	return out
}

func writeHTMLHead(b *strings.Builder, title string) {
	t := html.EscapeString(title)
	b.WriteString("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>")
	b.WriteString(t)
	b.WriteString("</title>\n</head>\n<body>\n<h1>")
	b.WriteString(t)
	b.WriteString("</h1>\n")
}
