package main

import (
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// restGet answers what GET path answers as the admin: status and body.
func restGet(t *testing.T, n *nodetest.Node, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", nodetest.AdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func restSend(t *testing.T, n *nodetest.Node, method, path, body string, want int) {
	t.Helper()
	req, err := http.NewRequest(method, n.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", nodetest.AdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
}

// TestOutputJSONMatchesREST: every list and get command's -o json output
// parses and equals what its REST route answers for the same thing (same
// field names, nulls and order), on a catalog where the optional fields are
// both set and unset. The commands print the route's answer, so this guards
// their wiring: path, query, flags.
func TestOutputJSONMatchesREST(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.DownloadFlush = 10 * time.Millisecond })
	restSend(t, n, "POST", "/api/channels", `{"name":"Zeta","private":false,"description":"last, capital"}`, 201)
	restSend(t, n, "POST", "/api/channels", `{"name":"alpha","private":true}`, 201)
	restSend(t, n, "PATCH", "/api/channels/alpha", `{"size_limit":1000000,"ttl":60}`, 200)
	restSend(t, n, "POST", "/api/channels", `{"name":"mid","private":false}`, 201)
	restSend(t, n, "POST", "/api/api-keys", `{"description":"scoped","expire_at":"2099-01-01","roles":[{"channel":"alpha","role":"maintainer"},{"channel":"alpha","package":"p","role":"member"}]}`, 201)
	restSend(t, n, "POST", "/api/api-keys", `{"description":"plain"}`, 201)

	uploadAndDownload(t, n, "mid", "jsonpkg")
	// The metrics answers compared below must not change between the two
	// reads: wait until the download is counted.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, b := restGet(t, n, "/metrics/channels/mid/mirrors"); strings.Contains(string(b), `"total":1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the download was never counted")
		}
	}

	for _, tc := range []struct {
		args []string
		path string
	}{
		{[]string{"channel", "list", "-o", "json"}, "/api/channels"},
		{[]string{"channel", "list", "--output", "json"}, "/api/channels"},
		{[]string{"channel", "list", "--output=json"}, "/api/channels"},
		{[]string{"channel", "get", "alpha", "-o", "json"}, "/api/channels/alpha"},
		{[]string{"channel", "get", "Zeta", "-o", "json"}, "/api/channels/Zeta"},
		{[]string{"key", "list", "-o", "json"}, "/api/api-keys"},
		{[]string{"metrics", "mid", "-o", "json"}, "/metrics/channels/mid?period=D"},
		{[]string{"metrics", "mid", "--period", "H", "--platform", "linux-64", "-o", "json"}, "/metrics/channels/mid?period=H&platform=linux-64"},
		{[]string{"metrics", "--by-mirror", "mid", "-o", "json"}, "/metrics/channels/mid/mirrors"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := cli(t, n, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			status, body := restGet(t, n, tc.path)
			if status != 200 {
				t.Fatalf("GET %s: %d %s", tc.path, status, body)
			}
			var want any
			if err := json.Unmarshal(body, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("condamesh %s printed\n%s\nGET %s answers\n%s", strings.Join(tc.args, " "), out, tc.path, body)
			}
		})
	}
}

// TestOutputFlagValues: table is the default and prints for people; a value
// other than table or json, on the command line or in CONDAMESH_OUTPUT, is a
// usage error (exit 2) naming the choices.
func TestOutputFlagValues(t *testing.T) {
	n := nodetest.Start(t)
	if _, errOut, code := cli(t, n, "channel", "create", "tbl"); code != 0 {
		t.Fatal(errOut)
	}
	for _, tc := range []struct {
		name     string
		env      string
		args     []string
		code     int
		contains string
	}{
		{"default table", "", []string{"channel", "list"}, 0, "NAME  KIND"},
		{"explicit table", "", []string{"channel", "list", "-o", "table"}, 0, "NAME  KIND"},
		{"env twin json", "json", []string{"key", "list"}, 0, `"time_created"`},
		{"flag over env twin", "json", []string{"key", "list", "-o", "table"}, 0, "EXPIRES\n"},
		{"bad flag value", "", []string{"channel", "list", "-o", "yaml"}, 2, `"yaml": want table or json`},
		{"bad value on get", "", []string{"channel", "get", "tbl", "--output", "JSON"}, 2, "want table or json"},
		{"bad value on metrics", "", []string{"metrics", "tbl", "-o", ""}, 2, "want table or json"},
		{"bad env twin", "xml", []string{"key", "list"}, 2, "CONDAMESH_OUTPUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("CONDAMESH_OUTPUT", tc.env)
			}
			out, errOut, code := cli(t, n, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.contains) {
				t.Fatalf("condamesh %s: exit %d (want %d), output %q, want it to contain %q", strings.Join(tc.args, " "), code, tc.code, out+errOut, tc.contains)
			}
		})
	}
}
