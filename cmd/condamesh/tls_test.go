package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/internal/testcert"
)

// TestServeTLSFlags: --tls-cert, --tls-key and --tls-ca and their
// CONDAMESH_ twins reach the node, which then serves HTTPS only (the lean
// loop off); files that do not go together stop serve before it serves.
func TestServeTLSFlags(t *testing.T) {
	ca := testcert.NewCA(t, "cluster")
	f := ca.Issue(t, "node")
	base := func(t *testing.T) []string {
		return []string{"serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"}
	}
	t.Run("flags", func(t *testing.T) {
		banner, logs := serveUntilServing(t, append(base(t), "--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.CA))
		if !strings.Contains(banner, "serving on https://127.0.0.1:") || !strings.Contains(logs, "lean_http=false") {
			t.Fatalf("banner %q, logs:\n%s", banner, logs)
		}
	})
	t.Run("env twins", func(t *testing.T) {
		t.Setenv("CONDAMESH_TLS_CERT", f.Cert)
		t.Setenv("CONDAMESH_TLS_KEY", f.Key)
		t.Setenv("CONDAMESH_TLS_CA", f.CA)
		if banner, _ := serveUntilServing(t, base(t)); !strings.Contains(banner, "serving on https://") {
			t.Fatalf("banner %q", banner)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", f.Cert}, "tls cert file and tls key file go together"},
		{"ca without cert", []string{"--tls-ca", f.CA}, "tls ca file needs a tls cert file"},
		{"ca file is the key", []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--tls-ca", f.Key}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), append(base(t), tc.args...), &out, &errb)
			if code != 1 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, want 1 with %q:\n%s%s", code, tc.want, out.String(), errb.String())
			}
		})
	}
}
