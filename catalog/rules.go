package catalog

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
)

// The channel rules: what a channel's settings may be. REST and Connect
// both check new channels with CheckChannelFields and CheckChannelName and
// changed metadata with CheckMetadata, so neither API accepts what the
// other refuses. The limits are Quetz's.
const (
	MaxChannelName    = 50
	MaxDescription    = 300
	UpstreamURLRegexp = `^(http|https)://.+`
)

var (
	upstreamURLRe = regexp.MustCompile(UpstreamURLRegexp)
	channelNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)
)

// RuleError is a setting the channel rules refuse. It matches ErrInvalid.
// Field is the path of the offending field ("name", "metadata",
// "sync_interval_seconds"; empty for the whole channel); Type, Msg and
// Input follow pydantic's validation errors, which Quetz clients parse.
// An empty Type means a plain message (Quetz's handler-level checks).
type RuleError struct {
	Field []string
	Type  string
	Msg   string
	Input any // with secrets masked
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrInvalid, strings.Join(e.Field, "."), e.Msg)
}

// Unwrap lets errors.Is match ErrInvalid.
func (e *RuleError) Unwrap() error { return ErrInvalid }

func ruleErr(typ, msg string, input any, field ...string) *RuleError {
	return &RuleError{Field: field, Type: typ, Msg: msg, Input: input}
}

// CheckChannelFields checks a new channel's settings (Quetz's request
// model): lengths, the upstream URL and mode, and the metadata.
func CheckChannelFields(ch *v1.Channel) error {
	if ch.GetName() == "" {
		return ruleErr("missing", "Field required", nil, "name")
	}
	if len([]rune(ch.Name)) > MaxChannelName {
		return ruleErr("string_too_long", fmt.Sprintf("String should have at most %d characters", MaxChannelName), ch.Name, "name")
	}
	if len([]rune(ch.Description)) > MaxDescription {
		return ruleErr("string_too_long", fmt.Sprintf("String should have at most %d characters", MaxDescription), ch.Description, "description")
	}
	if ch.MirrorChannelUrl != "" {
		if err := CheckUpstreamURL("mirror_channel_url", ch.MirrorChannelUrl); err != nil {
			return err
		}
		// File paths are appended to the channel URL: a query or fragment
		// would swallow them (and pick the exact URL fetched).
		if strings.ContainsAny(ch.MirrorChannelUrl, "?#") {
			return ruleErr("value_error", "Value error, mirror_channel_url may not have a query or fragment (use metadata.upstream_authorization or /t/<token>/ for credentials)", secret.URL(ch.MirrorChannelUrl), "mirror_channel_url")
		}
	}
	if ch.MirrorMode != "" && ch.MirrorMode != "proxy" && ch.MirrorMode != "mirror" {
		return ruleErr("enum", "Input should be 'proxy' or 'mirror'", ch.MirrorMode, "mirror_mode")
	}
	switch {
	case ch.MirrorChannelUrl != "" && ch.MirrorMode == "":
		return ruleErr("value_error", "Value error, 'mirror_channel_url' provided but 'mirror_mode' is undefined", nil)
	case ch.MirrorChannelUrl == "" && ch.MirrorMode != "":
		return ruleErr("value_error", "Value error, 'mirror_mode' provided but 'mirror_channel_url' is undefined", nil)
	}
	return CheckMetadata(ch.GetMetadata())
}

// CheckUpstreamURL checks a URL condamesh will fetch from (an upstream
// channel, a registered mirror): http or https with a host. field names it
// in the error.
func CheckUpstreamURL(field, raw string) error {
	u, err := url.Parse(raw)
	if !upstreamURLRe.MatchString(raw) || err != nil || u.Host == "" {
		return ruleErr("string_pattern_mismatch", "String should match pattern '"+UpstreamURLRegexp+"'", secret.URL(raw), field)
	}
	return nil
}

// CheckMetadata checks channel metadata, new or changed.
func CheckMetadata(md *v1.ChannelMetadata) error {
	if md == nil {
		return nil
	}
	if md.SyncIntervalSeconds < 0 {
		return ruleErr("greater_than_equal", "Input should be greater than or equal to 0", md.SyncIntervalSeconds, "metadata", "sync_interval_seconds")
	}
	if md.Includelist != nil && md.Excludelist != nil {
		return ruleErr("", "Cannot use both `includelist` and `excludelist` together.", nil, "metadata")
	}
	for name, list := range map[string]*v1.StringList{"includelist": md.Includelist, "excludelist": md.Excludelist} {
		if err := checkPatterns(name, list.GetItems()); err != nil {
			return err
		}
	}
	return nil
}

// checkPatterns checks the entries of an includelist or excludelist: one
// with glob characters is an fnmatch pattern (what the mirror matches
// with), refused when fnmatch would read part of it literally or drop it
// (conda.CheckGlob); one without is a prefix, as in Quetz.
func checkPatterns(field string, items []string) error {
	for _, e := range items {
		if !conda.HasGlobMeta(e) {
			continue
		}
		if err := conda.CheckGlob(e); err != nil {
			return ruleErr("value_error", "Value error, "+err.Error(), e, "metadata", field)
		}
	}
	return nil
}

// CheckChannelName checks the characters of a new channel's name (Quetz's
// handler checks, after authentication).
func CheckChannelName(name string) error {
	if strings.Contains(name, "_") {
		return ruleErr("", "_ should not be used in channel name", name, "name")
	}
	for _, r := range name {
		if r > 127 {
			return ruleErr("", "only ASCII characters should be used in channel name", name, "name")
		}
	}
	if !channelNameRe.MatchString(name) {
		return ruleErr("", fmt.Sprintf("channel name %q may only contain letters, digits, '.' and '-' and must start with a letter or digit", name), name, "name")
	}
	return nil
}
