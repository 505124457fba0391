package proxy

import (
	"context"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// SetDeriveHook makes f run as each derivation starts (before the source
// is read), so tests can hold a derivation while clients ask.
func SetDeriveHook(p *Proxy, f func()) { p.deriveHook = f }

// SetScanHooks makes each (if not nil) run as a derivation's scan passes
// each file, and once it has passed them all.
func SetScanHooks(p *Proxy, each func(filename string), scanned func()) {
	p.scanHook, p.scannedHook = each, scanned
}

// SetVariantHook makes f run as the compression of each lazy variant
// (the whole-file .zst included) starts.
func SetVariantHook(p *Proxy, f func(file string)) { p.variantHook = f }

// HasDerived says whether subdir's published set has file.
func HasDerived(p *Proxy, ch *v1.Channel, subdir, file string) bool {
	s, err := p.currentSet(context.Background(), ch, subdir)
	return err == nil && s != nil && s.files[file].Defined()
}

// PrescansTaken counts derivations that took the scan their source got
// while it downloaded.
func PrescansTaken(p *Proxy) uint64 { return p.prescansTaken.Load() }
