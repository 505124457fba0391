package api_test

import (
	"context"
	"errors"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/condamesh/condamesh/internal/secret"
)

// TestAPIKeysAtRest: no answer shows a key's stored hash; keys are stored
// under a hash keyed with the node's secret (no record under the key's
// plain SHA-256, so a copy of the database cannot test guesses); a key
// stored by an older version (plain SHA-256) works before and after the
// restart that migrates it, and is then stored keyed.
func TestAPIKeysAtRest(t *testing.T) { inHTTPModes(t, testAPIKeysAtRest) }

func testAPIKeysAtRest(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	ctx := context.Background()
	keys := condameshv1connect.NewKeyServiceClient(h2c(admin), e.url)
	created, err := keys.CreateKey(ctx, &v1.CreateKeyRequest{Description: "rpc"})
	if err != nil {
		t.Fatal(err)
	}
	if created.Info.GetKeyHash() != "" {
		t.Errorf("CreateKey shows the stored hash %q", created.Info.KeyHash)
	}
	listed, err := keys.ListKeys(ctx, &v1.ListKeysRequest{})
	if err != nil || len(listed.Keys) < 2 {
		t.Fatalf("ListKeys: %v %v", err, listed)
	}
	for _, k := range listed.Keys {
		if k.KeyHash != "" {
			t.Errorf("ListKeys shows key_hash %q of %q", k.KeyHash, k.Description)
		}
	}
	if body := string(e.get(t, "/api/api-keys", admin).want(t, http.StatusOK).body); strings.Contains(body, "hash") {
		t.Errorf("GET /api/api-keys: %s", body)
	}

	for _, key := range []string{admin, created.Key} {
		if _, err := e.n.Catalog().APIKey(ctx, secret.LegacyKeyHash(key)); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("key %s… is stored under its plain SHA-256 (%v)", key[:6], err)
		}
	}
	stored, err := e.n.Catalog().APIKeys(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range stored {
		if !strings.HasPrefix(k.KeyHash, "hmac1:") {
			t.Errorf("key %q stored under %q", k.Description, k.KeyHash)
		}
	}
	if fi, err := os.Stat(filepath.Join(e.n.Dir, "api-key-secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server secret file: %v %v", err, fi)
	}

	// A key of an older version: stored under its plain SHA-256.
	const old = "legacyKey0123456789abcdefghijklm"
	adminUser, err := e.n.Catalog().UserByName(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.n.Propose(ctx, &v1.Command{Op: &v1.Command_PutApiKey{PutApiKey: &v1.PutApiKeyOp{Key: &v1.ApiKey{
		KeyHash: secret.LegacyKeyHash(old), Description: "from an older version", UserId: adminUser.Id, OwnerId: adminUser.Id, KeyPrefix: old[:6],
	}}}}); err != nil {
		t.Fatal(err)
	}
	e.get(t, "/api/me", old).want(t, http.StatusOK) // before the migration
	e.restart(t)
	eventually(t, "the legacy key record to be migrated", func() bool {
		_, err := e.n.Catalog().APIKey(ctx, secret.LegacyKeyHash(old))
		return errors.Is(err, catalog.ErrNotFound)
	})
	e.get(t, "/api/me", old).want(t, http.StatusOK)
	e.get(t, "/api/me", admin).want(t, http.StatusOK)
	e.get(t, "/api/me", created.Key).want(t, http.StatusOK)
	e.do(t, "DELETE", "/api/api-keys/"+old, admin, nil, nil).want(t, http.StatusOK)
	e.get(t, "/api/me", old).want(t, http.StatusUnauthorized)
	// Errors never echo a key.
	r := e.do(t, "DELETE", "/api/api-keys/notAKeyButSecretLooking0123456789", admin, nil, nil).want(t, http.StatusNotFound)
	if strings.Contains(string(r.body), "SecretLooking") {
		t.Errorf("the error echoes the key: %s", r.body)
	}
}
