// Package secret keeps credentials write-only. Channel owners give
// condamesh secrets (an upstream's Authorization header, user:password@ or
// /t/<token>/ parts of an upstream URL, the URLs of registered mirrors) and
// API keys; none of them is ever shown again. This package is the one place
// that masks them, for every answer (REST and Connect), job record, error
// and log line, and the one place that turns an API key into the form
// stored at rest (keys.go).
//
// Masked values read Mask. A client that sends a masked value back (a
// PATCH of what it read) leaves the stored secret as it is (KeepMasked).
package secret

import (
	"net/url"
	"regexp"
	"strings"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

// Mask stands for a secret in answers, errors and logs.
const Mask = "***"

// tokenRe matches a /t/<token>/ path segment (conda's token URLs) and
// the key of an /api/api-keys/<key> path.
var tokenRe = regexp.MustCompile(`/(t|api-keys)/[^/]+(/|$)`)

// URL returns raw with its credentials masked: the whole user info
// (tokens often sit in the user name), /t/<token>/ path segments (and the
// key of /api/api-keys/<key>) and the
// query string (which may carry signatures). A URL without credentials
// comes back unchanged; a path alone ("/t/<token>/get/c") works too. Text
// that does not parse as a URL is masked whole.
func URL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Mask
	}
	hadUser := u.User != nil
	if hadUser && u.Host == "" {
		return Mask // user info without a host: nothing worth keeping
	}
	changed := hadUser
	u.User = nil
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = Mask, false
		changed = true
	}
	if p := u.EscapedPath(); tokenRe.MatchString(p) {
		p = tokenRe.ReplaceAllString(p, "/$1/"+Mask+"$2")
		u.Path, u.RawPath = p, ""
		if dec, err := url.PathUnescape(p); err == nil {
			u.Path, u.RawPath = dec, p
		}
		changed = true
	}
	if u.Fragment != "" {
		u.Fragment, u.RawFragment = "", ""
		changed = true
	}
	if !changed {
		return raw
	}
	out := u.String()
	if hadUser { // url.User would escape the mask
		out = strings.Replace(out, "//", "//"+Mask+"@", 1)
	}
	return out
}

// urlInText finds URLs (scheme://...) and conda token paths in free text.
var urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+|/t/[^/\s"'<>]+/`)

// Text masks every URL and /t/<token>/ segment found in free text: error
// messages, task errors, log values.
func Text(s string) string {
	if !strings.Contains(s, "://") && !strings.Contains(s, "/t/") {
		return s
	}
	return urlInText.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "/t/") {
			return "/t/" + Mask + "/"
		}
		return URL(m)
	})
}

// Err is err's text with Text applied, for log values; nil stays nil.
func Err(err error) any {
	if err == nil {
		return nil
	}
	return Text(err.Error())
}

// Channel returns ch as it may be shown: a copy with the upstream URL's
// credentials and the upstream Authorization masked. ch is not modified.
func Channel(ch *v1.Channel) *v1.Channel {
	if ch == nil {
		return nil
	}
	u := URL(ch.MirrorChannelUrl)
	auth := ch.GetMetadata().GetUpstreamAuthorization()
	if u == ch.MirrorChannelUrl && auth == "" {
		return ch
	}
	out := proto.Clone(ch).(*v1.Channel)
	out.MirrorChannelUrl = u
	if auth != "" {
		out.Metadata.UpstreamAuthorization = Mask
	}
	return out
}

// KeepMasked restores into next (the metadata a client asked for) the
// secrets of cur (the stored metadata) that the client sent back masked,
// so writing back what was read never replaces a secret with Mask.
func KeepMasked(cur, next *v1.ChannelMetadata) {
	if next != nil && next.UpstreamAuthorization == Mask {
		next.UpstreamAuthorization = cur.GetUpstreamAuthorization()
	}
}
