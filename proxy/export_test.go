package proxy

// SetDeriveHook makes f run as each derivation starts (before the source
// is read), so tests can hold a derivation while clients ask.
func SetDeriveHook(p *Proxy, f func()) { p.deriveHook = f }
