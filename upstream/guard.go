package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// ErrForbiddenAddress: a server-side fetch made for a caller who is not a
// server owner tried to reach a network the node's policy keeps from
// them (loopback, link-local, the node's own addresses by default), or a
// redirect led somewhere the first request could not have gone.
var ErrForbiddenAddress = errors.New("upstream: address not allowed")

// Networks says which addresses a restricted server-side fetch may connect
// to: one of Allow (every address when Allow is empty) and none of Deny.
// The check runs on the address actually dialled, after DNS, so a name
// that resolves to a denied address is refused too.
type Networks struct {
	Allow []netip.Prefix
	Deny  []netip.Prefix
	// DenyOwn also refuses the addresses of this machine's interfaces.
	DenyOwn bool
}

// DefaultRestricted is the policy for fetches made for callers who are
// not server owners: anywhere but loopback, link-local, unspecified and
// multicast addresses, and the node's own addresses.
func DefaultRestricted() Networks {
	return Networks{Deny: mustPrefixes("127.0.0.0/8", "::1/128", "169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8"), DenyOwn: true}
}

// ParsePrefixes reads a comma-separated list of CIDRs (or bare addresses).
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("upstream: network %q: %w", f, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func mustPrefixes(list ...string) []netip.Prefix {
	p, err := ParsePrefixes(strings.Join(list, ","))
	if err != nil {
		panic(err)
	}
	return p
}

// Permits reports whether a restricted fetch may connect to a.
func (n Networks) Permits(a netip.Addr) bool {
	a = a.Unmap()
	if n.DenyOwn && ownAddress(a) {
		return false
	}
	for _, p := range n.Deny {
		if p.Contains(a) {
			return false
		}
	}
	if len(n.Allow) == 0 {
		return true
	}
	for _, p := range n.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func ownAddress(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // unknown: refuse rather than guess
	}
	for _, ia := range addrs {
		if ipn, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// control is a net.Dialer Control that refuses addresses n does not permit.
func (n Networks) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
	}
	if !n.Permits(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
	}
	return nil
}

// addressClass sorts addresses for the redirect rule: a redirect may go to
// a public address, or to one of the same class as the first request's.
func addressClass(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "link-local"
	case a.IsPrivate():
		return "private"
	case a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "special"
	}
	return "public"
}

// RedirectPolicy says which redirects an upstream fetch follows.
type RedirectPolicy string

const (
	// RedirectSameRules (the default) follows a redirect to a public
	// address, or to an address of the same class (loopback, link-local,
	// private) as the first request's host.
	RedirectSameRules RedirectPolicy = "same-rules"
	// RedirectAny follows every redirect (up to 10).
	RedirectAny RedirectPolicy = "any"
	// RedirectNone follows none: a redirect is an error.
	RedirectNone RedirectPolicy = "none"
)

// Validate reports an unknown policy.
func (p RedirectPolicy) Validate() error {
	switch p {
	case "", RedirectSameRules, RedirectAny, RedirectNone:
		return nil
	}
	return fmt.Errorf("upstream: redirect policy %q: want same-rules, any or none", string(p))
}

// checkRedirect keeps credentials on the exact origin (scheme, host and
// port) of the first request and applies the redirect policy.
func (p RedirectPolicy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("%w: more than 10 redirects", ErrRefused)
	}
	first := via[0].URL
	if !sameOrigin(first, req.URL) {
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
	}
	switch p {
	case RedirectNone:
		return fmt.Errorf("%w: redirect to %s not followed", ErrRefused, Redact(req.URL.String()))
	case RedirectAny:
		return nil
	}
	want, err := hostClasses(req.Context(), first.Hostname())
	if err != nil {
		return fmt.Errorf("%w: redirect from %s: %v", ErrUnavailable, Redact(first.String()), err)
	}
	got, err := hostClasses(req.Context(), req.URL.Hostname())
	if err != nil {
		return fmt.Errorf("%w: redirect to %s: %v", ErrUnavailable, Redact(req.URL.String()), err)
	}
	for c := range got {
		if c != "public" && !want[c] {
			return fmt.Errorf("%w: redirect to a %s address (%s) from %s", ErrForbiddenAddress, c, Redact(req.URL.String()), Redact(first.String()))
		}
	}
	return nil
}

// sameOrigin compares scheme, host and port (a missing port is the
// scheme's default).
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && effectivePort(a) == effectivePort(b)
}

func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

func hostClasses(ctx context.Context, host string) (map[string]bool, error) {
	out := map[string]bool{}
	if a, err := netip.ParseAddr(host); err == nil {
		out[addressClass(a)] = true
		return out, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		out[addressClass(a)] = true
	}
	return out, nil
}
