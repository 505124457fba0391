package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// API keys at rest.
//
// The catalog stores a key under KeyHasher.Hash(key):
//
//	"hmac1:" + hex(HMAC-SHA256(server secret, SHA-256(key)))
//
// so a stolen database (Pebble files, Raft snapshots, backups) holds no
// value an attacker can test key guesses against without the server
// secret, which lives outside the replicated metadata (a file in the data
// directory, see LoadOrCreateKeySecret). The HMAC is taken over the key's
// SHA-256 rather than over the key so that the records of older versions,
// stored under the plain SHA-256 hex ("legacy"), can be rehashed without
// the keys themselves: the node does that once it is the leader at start
// (api.Server.MigrateKeyHashes), and until then a legacy record still
// authenticates its key.

// keyHashPrefix marks the current scheme of a stored key hash.
const keyHashPrefix = "hmac1:"

// KeySecretSize is the size in bytes of a generated server secret.
const KeySecretSize = 32

// ErrBadKeySecret is a server secret file that cannot be used.
var ErrBadKeySecret = errors.New("secret: bad API key secret")

// KeyHasher turns API keys into their stored form. Safe for concurrent use.
type KeyHasher struct{ secret []byte }

// NewKeyHasher returns a hasher keyed with secret (at least 16 bytes).
func NewKeyHasher(secret []byte) (*KeyHasher, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("%w: %d bytes, want at least 16", ErrBadKeySecret, len(secret))
	}
	return &KeyHasher{secret: append([]byte(nil), secret...)}, nil
}

// Hash returns the stored form of an API key.
func (h *KeyHasher) Hash(key string) string {
	d := sha256.Sum256([]byte(key))
	return h.keyed(d[:])
}

func (h *KeyHasher) keyed(digest []byte) string {
	m := hmac.New(sha256.New, h.secret)
	m.Write(digest)
	return keyHashPrefix + hex.EncodeToString(m.Sum(nil))
}

// Rehash returns the current stored form of a key from its legacy stored
// form (SHA-256 hex); ok is false if legacy is not one.
func (h *KeyHasher) Rehash(legacy string) (hash string, ok bool) {
	if !IsLegacyKeyHash(legacy) {
		return "", false
	}
	d, _ := hex.DecodeString(legacy)
	return h.keyed(d), true
}

// LegacyKeyHash returns the stored form of a key before keyed hashing:
// its unsalted SHA-256 hex.
func LegacyKeyHash(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// IsLegacyKeyHash reports whether a stored key hash is in the legacy form.
func IsLegacyKeyHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// LoadOrCreateKeySecret reads the server secret from path (hex, one line),
// creating the file (mode 0600) with a random secret if it does not exist.
func LoadOrCreateKeySecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(s) < 16 {
			return nil, fmt.Errorf("%w: %s: want at least 32 hex digits", ErrBadKeySecret, path)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secret: read API key secret: %w", err)
	}
	s := make([]byte, KeySecretSize)
	if _, err := rand.Read(s); err != nil {
		return nil, fmt.Errorf("secret: generate API key secret: %w", err)
	}
	// Written whole under a temporary name, then renamed: a crash never
	// leaves a partial secret behind.
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("secret: create API key secret: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(s) + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close(), os.Rename(tmp, path)); err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("secret: write API key secret: %w", err)
	}
	return s, nil
}
