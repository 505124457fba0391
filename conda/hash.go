package conda

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
)

// Digests are the size and checksums of a package file as they appear in
// repodata records.
type Digests struct {
	Size   int64
	MD5    [md5.Size]byte
	SHA256 [sha256.Size]byte
}

// MD5Hex returns the MD5 digest as lowercase hex.
func (d Digests) MD5Hex() string { return hex.EncodeToString(d.MD5[:]) }

// SHA256Hex returns the SHA-256 digest as lowercase hex.
func (d Digests) SHA256Hex() string { return hex.EncodeToString(d.SHA256[:]) }

// Hasher is an io.Writer that computes the size, MD5 and SHA-256 of
// everything written to it in one pass. The zero value is not usable; call
// NewHasher.
type Hasher struct {
	n      int64
	md5    hash.Hash
	sha256 hash.Hash
}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher {
	return &Hasher{md5: md5.New(), sha256: sha256.New()}
}

// Write adds p to the digests. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	h.md5.Write(p)
	h.sha256.Write(p)
	h.n += int64(len(p))
	return len(p), nil
}

// Sum returns the digests of everything written so far.
func (h *Hasher) Sum() Digests {
	d := Digests{Size: h.n}
	h.md5.Sum(d.MD5[:0])
	h.sha256.Sum(d.SHA256[:0])
	return d
}

// HashReader reads r to EOF and returns its digests.
func HashReader(r io.Reader) (Digests, error) {
	h := NewHasher()
	if _, err := io.Copy(h, r); err != nil {
		return Digests{}, fmt.Errorf("conda: hashing: %w", err)
	}
	return h.Sum(), nil
}
