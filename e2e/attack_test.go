package e2e

// The attacks of issue 9, replayed against the real binary as a black
// box: each test is one attack and what the node must do about it. The
// proxy's corrupt, unlisted and replaced upstream files are in
// proxy_verify_test.go.

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue reads one unlabelled sample from the node's /metrics.
func (s *server) metricValue(name string) float64 {
	s.t.Helper()
	code, body := s.do("GET", "/metrics", "", nil)
	if code != 200 {
		s.t.Fatalf("/metrics: %d", code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		s.t.Fatalf("no %s in /metrics", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		s.t.Fatal(err)
	}
	return v
}

// createUser makes a user with a server role and returns its API key.
func (s *server) createUser(name, role string) string {
	s.t.Helper()
	var out struct {
		APIKey string `json:"api_key"`
	}
	b := s.mustDo(201, "POST", "/api/users", fmt.Sprintf(`{"username":%q,"role":%q}`, name, role))
	if err := json.Unmarshal(b, &out); err != nil || out.APIKey == "" {
		s.t.Fatalf("no key in %s (%v)", b, err)
	}
	return out.APIKey
}

// TestAttackGzipBomb: a 1 MB gzip body that inflates to 1 GiB, sent to
// Connect by an anonymous caller and by the owner, leaves the node's peak
// RSS under 200 MB and answers resource_exhausted.
func TestAttackGzipBomb(t *testing.T) {
	s := startServer(t, t.TempDir())
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zero := make([]byte, 1<<20)
	for range 1024 {
		_, _ = zw.Write(zero)
	}
	_ = zw.Close()
	for _, key := range []string{"", adminKey} {
		for range 3 {
			code, body := s.do("POST", "/condamesh.v1.ChannelService/GetChannel", key, bytes.NewReader(bomb.Bytes()),
				"Content-Type", "application/proto", "Content-Encoding", "gzip")
			if !strings.Contains(string(body), "resource_exhausted") {
				t.Fatalf("key %q: %d %s", key, code, body)
			}
		}
	}
	if peak := rssPeak(t, s.cmd.Process.Pid); peak > 200 {
		t.Fatalf("peak RSS %.0f MiB after gzip bombs (bound 200)", peak)
	}
}

// TestAttackCredentialsNeverShown: upstream credentials given in a
// channel's URL and metadata appear in no API answer, metrics page, job
// record or log line, for anonymous, member and owner callers alike.
func TestAttackCredentialsNeverShown(t *testing.T) {
	s := startServer(t, t.TempDir())
	secrets := []string{"pw-6d1f0c", "tok-9a8b7c", "auth-51e2d3"}
	up := "http://someone:" + secrets[0] + "@127.0.0.1:1/t/" + secrets[1] + "/chan"
	meta := `"metadata": {"upstream_authorization": "Bearer ` + secrets[2] + `"}`
	s.mustDo(201, "POST", "/api/channels", `{"name":"creds-proxy","private":false,"mirror_channel_url":"`+up+`","mirror_mode":"proxy",`+meta+`}`)
	s.mustDo(201, "POST", "/api/channels", `{"name":"creds-mirror","private":false,"mirror_channel_url":"`+up+`","mirror_mode":"mirror",`+meta+`}`)
	s.mustDo(200, "PATCH", "/api/channels/creds-proxy", `{"ttl":600}`)
	member := s.createUser("creds-member", "member")
	// Let the mirror's first sync fail against the closed port, so its job
	// and task records and the log hold whatever it would leak.
	waitFor(t, 30*time.Second, "the mirror's sync job ends", func() bool {
		_, b := s.do("GET", "/api/jobs?status=failed&status=success", adminKey, nil)
		return strings.Contains(string(b), "synchronize")
	})
	_, _ = s.do("GET", "/get/creds-proxy/linux-64/repodata.json", "", nil)
	connect := func(key, method, body string) []byte {
		_, b := s.do("POST", "/condamesh.v1.ChannelService/"+method, key, strings.NewReader(body), "Content-Type", "application/json")
		return b
	}
	for who, key := range map[string]string{"anonymous": "", "member": member, "owner": adminKey} {
		answers := map[string][]byte{}
		for _, p := range []string{"/api/channels", "/api/channels/creds-proxy", "/api/channels/creds-mirror", "/api/paginated/channels",
			"/api/jobs", "/api/jobs/1/tasks", "/metrics", "/metricsp", "/api/channels/creds-mirror/mirrors"} {
			_, answers[p] = s.do("GET", p, key, nil)
		}
		answers["connect ListChannels"] = connect(key, "ListChannels", `{}`)
		answers["connect GetChannel"] = connect(key, "GetChannel", `{"name":"creds-proxy"}`)
		for what, b := range answers {
			for _, sec := range secrets {
				if bytes.Contains(b, []byte(sec)) {
					t.Errorf("%s: %s shows a secret: %.400s", who, what, b)
				}
			}
		}
		if !bytes.Contains(answers["/api/channels/creds-proxy"], []byte("creds-proxy")) {
			t.Fatalf("%s: the channel itself is not shown: %s", who, answers["/api/channels/creds-proxy"])
		}
	}
	for _, sec := range secrets {
		if strings.Contains(s.logs.String(), sec) {
			t.Errorf("the node's log shows a secret")
		}
	}
}

// TestAttackRandom404s: 1,000 anonymous requests for files that do not
// exist (conda-like names and junk paths, some 7 KB long) leave the Raft
// log as it was and reach the upstream a bounded number of times.
func TestAttackRandom404s(t *testing.T) {
	ng := startNginxLogged(t, true)
	newUpstreamChannel(t, ng.root+"/chan", 3)
	s := startServer(t, t.TempDir())
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"px","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"proxy"}`, ng.url))
	// Warm the subdir's index so what follows is only the 404s.
	if code, _ := s.do("GET", "/get/px/linux-64/repodata.json", "", nil); code != 200 {
		t.Fatal("repodata")
	}
	before := s.metricValue("condamesh_raft_last_index")
	upBefore := len(ng.requests(t))
	for i := range 1000 {
		var rnd [8]byte
		_, _ = rand.Read(rnd[:])
		var p string
		switch i % 4 {
		case 0:
			p = "linux-64/nope" + hex.EncodeToString(rnd[:]) + "-1.0-0.conda"
		case 1:
			p = "linux-64/" + strings.Repeat("a", 7000) + hex.EncodeToString(rnd[:]) + ".tar.bz2"
		case 2:
			p = "linux-64/a/b/c/d/" + hex.EncodeToString(rnd[:])
		case 3:
			p = "noarch/x%3Fy" + hex.EncodeToString(rnd[:]) + ".json"
		}
		if code, _ := s.do("GET", "/get/px/"+p, "", nil); code != http.StatusNotFound && code != http.StatusBadRequest {
			t.Fatalf("GET %.80s: %d", p, code)
		}
	}
	if after := s.metricValue("condamesh_raft_last_index"); after != before {
		t.Fatalf("1,000 404s grew the Raft log from index %v to %v", before, after)
	}
	if n := len(ng.requests(t)) - upBefore; n > 10 {
		t.Fatalf("1,000 404s made %d upstream requests", n)
	}
}

// rawExchange sends raw bytes on a new connection and returns what comes
// back until the server closes or stays silent for a second, with Date
// fields blanked.
func rawExchange(t *testing.T, base, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return regexp.MustCompile(`(?m)^Date: .*\r$`).ReplaceAllString(got.String(), "Date: -\r")
}

// TestAttackLeanPathAsNetHTTP: the requests that lost answers or hung on
// the lean HTTP/1.1 loop get, byte for byte, what the same binary answers
// with the loop switched off (plain net/http).
func TestAttackLeanPathAsNetHTTP(t *testing.T) {
	lean := startServer(t, t.TempDir())
	plain := startServerArgs(t, t.TempDir(), "--lean-http=false")
	cases := map[string]string{
		"close then a byte":          "GET /get/none/noarch/repodata.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nX",
		"complete then partial":      "GET /get/none/noarch/repodata.json HTTP/1.1\r\nHost: x\r\n\r\nGET /get/none/noarch/rep",
		"HTTP/1.0 pipelined":         "GET /get/none/a HTTP/1.0\r\n\r\nGET /get/none/b HTTP/1.0\r\n\r\n",
		"bare LF head":               "GET /get/none/a HTTP/1.1\nHost: x\n\n",
		"malformed Host":             "GET /get/none/a HTTP/1.1\r\nHost: a b\r\n\r\n",
		"two Host fields":            "GET /get/none/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"duplicate Content-Length":   "GET /get/none/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"three pipelined then close": strings.Repeat("HEAD /get/none/a HTTP/1.1\r\nHost: x\r\n\r\n", 2) + "GET /get/none/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			got, want := rawExchange(t, lean.url, raw), rawExchange(t, plain.url, raw)
			if want == "" {
				t.Fatalf("net/http sent nothing: the case tests nothing")
			}
			if got != want {
				t.Fatalf("lean path:\n%q\nnet/http:\n%q", got, want)
			}
		})
	}
}
