package proxy

// SetDeriveHook makes f run as each derivation starts (before the source
// is read), so tests can hold a derivation while clients ask.
func SetDeriveHook(p *Proxy, f func()) { p.deriveHook = f }

// SetScanHooks makes each (if not nil) run as a derivation's scan passes
// each file, and once it has passed them all.
func SetScanHooks(p *Proxy, each func(filename string), scanned func()) {
	p.scanHook, p.scannedHook = each, scanned
}
