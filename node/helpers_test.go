package node_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/node/nodetest"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// call sends one request to base with key (if any) as X-API-Key and
// returns the status and body.
func call(t *testing.T, base, key, method, path, ctype string, body io.Reader) (int, []byte) {
	t.Helper()
	return callWith(t, http.DefaultClient, base, key, method, path, ctype, body)
}

// callWith is call through hc.
func callWith(t *testing.T, hc *http.Client, base, key, method, path, ctype string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// newUser makes a user with a server role through n's API (as the admin)
// and returns its API key.
func newUser(t *testing.T, base, name, role string) string {
	t.Helper()
	st, b := call(t, base, nodetest.AdminKey, "POST", "/api/users", "application/json", strings.NewReader(`{"username":"`+name+`","role":"`+role+`"}`))
	var u struct {
		Key string `json:"api_key"`
	}
	if err := json.Unmarshal(b, &u); st != 201 || err != nil || u.Key == "" {
		t.Fatalf("create user %s (%s): %d %s", name, role, st, b)
	}
	return u.Key
}
