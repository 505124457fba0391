package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// deployNotServe are CONDAMESH_ variables deploy/ may name that are not
// serve flags: the client commands' flags, and serve's first admin key.
var deployNotServe = map[string]bool{"server": true, "api-key": true, "output": true, "admin-key": true, "help": true}

var (
	deployEnvRe  = regexp.MustCompile(`\bCONDAMESH_([A-Z0-9_]+)\b`)
	deployFlagRe = regexp.MustCompile(`(?:^|[\s"'(\[])--([a-z][a-z0-9-]*)`)
	// Where deploy/ passes flags to serve: a command line `condamesh serve
	// ...`, an item of a YAML command list, local-cluster.sh's args array.
	deployServeLineRe = regexp.MustCompile(`condamesh serve\b|^\s*- --[a-z]|\bargs\+?=\(`)
)

// TestDeployFilesUseServeFlags: every `serve` flag and CONDAMESH_ variable
// that the files in deploy/ (compose, Kubernetes, systemd, local-cluster.sh,
// README) use is one serve has, so they stay true as flags change.
func TestDeployFilesUseServeFlags(t *testing.T) {
	serve := newServe()
	known := func(name string) bool {
		return serve.Flags().Lookup(name) != nil || deployNotServe[name]
	}
	var files []string
	for _, pattern := range []string{"../../deploy/*", "../../deploy/k8s/*"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	checked := 0
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			where := filepath.Base(filepath.Dir(f)) + "/" + filepath.Base(f) + ":" + strconv.Itoa(i+1)
			for _, m := range deployEnvRe.FindAllStringSubmatch(line, -1) {
				checked++
				if name := strings.ToLower(strings.ReplaceAll(m[1], "_", "-")); !known(name) {
					t.Errorf("%s: CONDAMESH_%s is no serve flag's twin (--%s)", where, m[1], name)
				}
			}
			loc := deployServeLineRe.FindStringIndex(line)
			if loc == nil {
				continue
			}
			for _, m := range deployFlagRe.FindAllStringSubmatch(line[loc[0]:], -1) {
				checked++
				if !known(m[1]) {
					t.Errorf("%s: serve has no flag --%s", where, m[1])
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked only %d flag and variable uses in %d files: is deploy/ where the test looks?", checked, len(files))
	}
}
