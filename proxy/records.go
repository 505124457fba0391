package proxy

import (
	"context"
	"strings"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/ipfs/go-cid"
)

// want is what the upstream repodata says a package file is: the blob its
// sha256 names, and its size.
type want struct {
	cid  cid.Cid
	size int64
}

// packageRecord returns the record the proxy's current copy of the
// subdir's repodata.json (fetched first if there is none) has for the
// package file path, looked up in the shard of its name in the subdir's
// derived set (built once per upstream version, so no request parses the
// whole index). A file it does not list, or lists without a valid sha256
// and a size, is not found: its bytes could not be checked.
func (p *Proxy) packageRecord(ctx context.Context, ch *v1.Channel, path string) (want, error) {
	subdir, fn, _ := strings.Cut(path, "/")
	return p.packageEntry(ctx, ch, subdir, fn)
}
