package secret

import (
	"net/url"
	"os"
	"strings"
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"https://conda.anaconda.org/conda-forge", "https://conda.anaconda.org/conda-forge"},
		{"https://user:pw@host/c", "https://***@host/c"},
		{"https://tokenonly@host/c", "https://***@host/c"},
		{"https://host/t/abc123/get/c", "https://host/t/***/get/c"},
		{"https://host/t/abc123", "https://host/t/***"},
		{"https://u:p@host/t/tok/c?sig=1#frag", "https://***@host/t/***/c?***"},
		{"/t/abc/get/c/noarch/x.conda", "/t/***/get/c/noarch/x.conda"},
		{"/get/c/noarch/repodata.json", "/get/c/noarch/repodata.json"},
		{"/api/api-keys/SomeKey123", "/api/api-keys/***"},
		{"http://[::1", Mask},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"no urls here", "no urls here"},
		{`upstream: unavailable: https://u:pw@h/t/tok/c/noarch/x: dial tcp: refused`, `upstream: unavailable: https://***@h/t/***/c/noarch/x: dial tcp: refused`},
		{`Post "http://a:b@h/api/channels/c/mirrors": EOF`, `Post "http://***@h/api/channels/c/mirrors": EOF`},
		{"GET /t/secrettoken/get/c", "GET /t/***/get/c"},
	} {
		if got := Text(c.in); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestChannel(t *testing.T) {
	ch := &v1.Channel{Name: "c", MirrorChannelUrl: "https://u:pw@h/t/tok/c", Metadata: &v1.ChannelMetadata{UpstreamAuthorization: "Bearer s3cret", Prune: true}}
	got := Channel(ch)
	if got.MirrorChannelUrl != "https://***@h/t/***/c" || got.Metadata.UpstreamAuthorization != Mask || !got.Metadata.Prune {
		t.Fatalf("masked: %v", got)
	}
	if ch.MirrorChannelUrl != "https://u:pw@h/t/tok/c" || ch.Metadata.UpstreamAuthorization != "Bearer s3cret" {
		t.Fatal("Channel modified its argument")
	}
	plain := &v1.Channel{Name: "p", MirrorChannelUrl: "https://h/c"}
	if Channel(plain) != plain {
		t.Error("a channel without secrets was copied")
	}

	for _, c := range []struct{ sent, want string }{{Mask, "Bearer s3cret"}, {"Bearer new", "Bearer new"}, {"", ""}} {
		next := &v1.ChannelMetadata{UpstreamAuthorization: c.sent}
		KeepMasked(ch.Metadata, next)
		if next.UpstreamAuthorization != c.want {
			t.Errorf("sent %q: stored %q, want %q", c.sent, next.UpstreamAuthorization, c.want)
		}
	}
}

func TestKeyHasher(t *testing.T) {
	if _, err := NewKeyHasher([]byte("short")); err == nil {
		t.Fatal("a short secret was accepted")
	}
	a, _ := NewKeyHasher([]byte("0123456789abcdef0123456789abcdef"))
	b, _ := NewKeyHasher([]byte("fedcba9876543210fedcba9876543210"))
	key := "AbCdEfGhIjKlMnOpQrStUvWxYz012345"
	h := a.Hash(key)
	if !strings.HasPrefix(h, keyHashPrefix) || h == b.Hash(key) || strings.Contains(h, LegacyKeyHash(key)) {
		t.Fatalf("hash %q: not keyed", h)
	}
	if IsLegacyKeyHash(h) || !IsLegacyKeyHash(LegacyKeyHash(key)) {
		t.Fatal("legacy detection")
	}
	if re, ok := a.Rehash(LegacyKeyHash(key)); !ok || re != h {
		t.Fatalf("rehash of the legacy form: %q %v, want %q", re, ok, h)
	}
	if _, ok := a.Rehash(h); ok {
		t.Fatal("a current hash was rehashed")
	}
}

func TestLoadOrCreateKeySecret(t *testing.T) {
	p := t.TempDir() + "/api-key-secret"
	s1, err := LoadOrCreateKeySecret(p)
	if err != nil || len(s1) != KeySecretSize {
		t.Fatalf("create: %v %d", err, len(s1))
	}
	s2, err := LoadOrCreateKeySecret(p)
	if err != nil || string(s1) != string(s2) {
		t.Fatalf("reload: %v", err)
	}
	bad := t.TempDir() + "/bad"
	if err := writeFile(bad, "not hex\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeySecret(bad); err == nil {
		t.Fatal("a malformed secret file was accepted")
	}
}

// FuzzURL: whatever a channel owner sends as a URL, the masked form is
// stable (masking twice changes nothing) and carries no password, no user
// name, no query and no token segment but Mask.
func FuzzURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h/t/tok/c?x=1#f", "/t/a/b", "http://h/%2Ft%2Fx/", "https://h/t/%74ok/", "ftp://x", "::", "https://h/t//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := URL(in)
		if again := URL(out); again != out {
			t.Fatalf("URL(%q) = %q, but URL of that = %q", in, out, again)
		}
		u, err := url.Parse(out)
		if err != nil {
			if out != Mask {
				t.Fatalf("URL(%q) = %q does not parse: %v", in, out, err)
			}
			return
		}
		if u.User != nil && (u.User.Username() != Mask || u.User.String() != url.User(Mask).String()) {
			t.Fatalf("URL(%q) = %q keeps user info", in, out)
		}
		if u.RawQuery != "" && u.RawQuery != Mask {
			t.Fatalf("URL(%q) = %q keeps a query", in, out)
		}
		for _, m := range tokenRe.FindAllString(u.EscapedPath(), -1) {
			if !strings.HasSuffix(strings.TrimSuffix(m, "/"), "/"+Mask) {
				t.Fatalf("URL(%q) = %q keeps a token segment %q", in, out, m)
			}
		}
		if orig, err := url.Parse(in); err == nil {
			if p, ok := orig.User.Password(); ok && len(p) > 3 && strings.Contains(out, p) && !strings.Contains(orig.Host+orig.Path, p) {
				t.Fatalf("URL(%q) = %q shows the password", in, out)
			}
		}
	})
}

// FuzzText: masking free text is stable.
func FuzzText(f *testing.F) {
	for _, s := range []string{"err: https://u:p@h/t/tok/c: x", "GET /t/a/get/c", "a://b c://d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Text(in)
		if again := Text(out); again != out {
			t.Fatalf("Text(%q) = %q, but Text of that = %q", in, out, again)
		}
	})
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }
