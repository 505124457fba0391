package conda

// knownSubdirs are the platform subdirs conda knows (its KNOWN_SUBDIRS),
// and the few more that rattler (pixi) and mamba know.
var knownSubdirs = map[string]bool{
	"linux-riscv32": true, "linux-ppc": true, "linux-loongarch64": true, "freebsd-arm64": true,
	"noarch": true, "emscripten-wasm32": true, "wasi-wasm32": true, "freebsd-64": true,
	"linux-32": true, "linux-64": true, "linux-aarch64": true, "linux-armv6l": true, "linux-armv7l": true,
	"linux-ppc64": true, "linux-ppc64le": true, "linux-riscv64": true, "linux-s390x": true,
	"osx-64": true, "osx-arm64": true, "win-32": true, "win-64": true, "win-arm64": true, "zos-z": true,
}

// KnownSubdir reports whether s is one of the platform subdirs conda
// clients know. Values chosen by clients (metrics labels) are bounded by it.
func KnownSubdir(s string) bool { return knownSubdirs[s] }
