package api_test

import (
	"strings"
	"testing"

	"github.com/condamesh/condamesh/api"
)

// TestConfigValidate: configurations that cannot work are named.
func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  api.Config
		want string // "" for valid
	}{
		{"zero", api.Config{}, ""},
		{"sequential bzip2", api.Config{Bzip2Workers: 1}, ""},
		{"negative bzip2 workers", api.Config{Bzip2Workers: -1}, "bzip2 workers"},
		{"short metrics token", api.Config{MetricsToken: "short"}, "metrics token"},
		{"short key secret", api.Config{KeySecret: []byte("short")}, "key secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("Validate: %v, want %q", err, c.want)
			}
		})
	}
}
