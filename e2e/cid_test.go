package e2e

import (
	"crypto/sha256"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// cidOf computes the CIDv1 (raw, sha2-256) of b independently of the store.
func cidOf(b []byte) string {
	sum := sha256.Sum256(b)
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	return cid.NewCidV1(cid.Raw, mh).String()
}
