package node_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestLinearizability records histories of channel create, patch (ttl,
// private), delete and get, package uploads and reads of a package's file
// list, sent by concurrent clients to every node of a 3-node cluster at
// random, while the leader is crashed (SIGKILL-equivalent) and restarted
// and then a follower is crashed and restarted. porcupine checks each
// history against a sequential model of one channel per key.
//
// Reads go into the history only with ?consistent=true (a plain read may be
// stale by design). A write whose outcome the client cannot know (timeout,
// connection lost, a 5xx during failover) is recorded as returning at the
// end of time with an unknown result: it may have taken effect at any point
// after its call, or never. A request whose connection was refused never
// reached a node and is left out.
//
// The faults (linFaults): the leader crashes and restarts, a follower is
// partitioned (cluster.Partition cuts its Raft, gossip and node-to-node
// HTTP both ways) and healed, another follower crashes and restarts.
func TestLinearizability(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			runLinearizability(t, seed, linLoad)
		})
	}
}

// linLoad is how long the clients of one seed run.
const linLoad = 10 * time.Second

const (
	linClients  = 5
	linChannels = 3
	// linOpTimeout bounds one request: longer than a failover, so that
	// few operations end up unknown.
	linOpTimeout = 5 * time.Second
	// linCheckTimeout bounds porcupine's search per seed.
	linCheckTimeout = 20 * time.Second
)

type linKind uint8

const (
	linCreate linKind = iota
	linPatchTTL
	linPatchPrivate
	linDelete
	linGet
	linUpload
	linList
)

var linKindNames = [...]string{"create", "patch-ttl", "patch-private", "delete", "get", "upload", "list"}

func (k linKind) String() string { return linKindNames[k] }

func (k linKind) read() bool { return k == linGet || k == linList }

// linInput is one operation on one channel.
type linInput struct {
	kind        linKind
	channel     string
	description string // create
	ttl         int64  // create, patch-ttl
	private     bool   // patch-private
	file        string // upload
}

// linOutput is what the client saw. unknown: the outcome is not known.
type linOutput struct {
	unknown     bool
	status      int
	description string // get
	ttl         int64  // get
	private     bool   // get
	files       string // list: sorted, comma-separated
}

// linState is one channel in the model. It is comparable (files is a
// sorted, comma-separated set) so porcupine's default equality works.
type linState struct {
	exists      bool
	description string
	ttl         int64
	private     bool
	files       string
}

func addFile(set, f string) string {
	var fs []string
	if set != "" {
		fs = strings.Split(set, ",")
	}
	if !slices.Contains(fs, f) {
		fs = append(fs, f)
		slices.Sort(fs)
	}
	return strings.Join(fs, ",")
}

// linStep is the sequential specification of one channel.
func linStep(st linState, in linInput, out linOutput) (bool, linState) {
	next := st
	status := 0 // the status this step answers
	switch in.kind {
	case linCreate:
		if st.exists {
			status = http.StatusConflict
		} else {
			status = http.StatusCreated
			next = linState{exists: true, description: in.description, ttl: in.ttl}
		}
	case linPatchTTL, linPatchPrivate:
		if !st.exists {
			status = http.StatusNotFound
		} else {
			status = http.StatusOK
			if in.kind == linPatchTTL {
				next.ttl = in.ttl
			} else {
				next.private = in.private
			}
		}
	case linDelete:
		if !st.exists {
			status = http.StatusNotFound
		} else {
			status = http.StatusOK
			next = linState{}
		}
	case linUpload:
		if !st.exists {
			status = http.StatusNotFound
		} else {
			status = http.StatusCreated
			next.files = addFile(st.files, in.file)
		}
	case linGet:
		if !st.exists {
			return out.status == http.StatusNotFound, st
		}
		return out.status == http.StatusOK && out.description == st.description && out.ttl == st.ttl && out.private == st.private, st
	case linList:
		// The package exists once a file of it was uploaded.
		if !st.exists || st.files == "" {
			return out.status == http.StatusNotFound, st
		}
		return out.status == http.StatusOK && out.files == st.files, st
	}
	if out.unknown {
		return true, next
	}
	return out.status == status, next
}

var linModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			ch := op.Input.(linInput).channel
			if _, ok := by[ch]; !ok {
				keys = append(keys, ch)
			}
			by[ch] = append(by[ch], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: func(state, input, output any) (bool, any) {
		return linStep(state.(linState), input.(linInput), output.(linOutput))
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		arg := ""
		switch in.kind {
		case linCreate:
			arg = fmt.Sprintf(" desc=%s ttl=%d", in.description, in.ttl)
		case linPatchTTL:
			arg = fmt.Sprintf(" ttl=%d", in.ttl)
		case linPatchPrivate:
			arg = fmt.Sprintf(" private=%t", in.private)
		case linUpload:
			arg = " " + in.file
		}
		res := fmt.Sprint(out.status)
		switch {
		case out.unknown:
			res = "unknown"
		case in.kind == linGet && out.status == http.StatusOK:
			res = fmt.Sprintf("desc=%s ttl=%d private=%t", out.description, out.ttl, out.private)
		case in.kind == linList && out.status == http.StatusOK:
			res = "[" + out.files + "]"
		}
		return fmt.Sprintf("%s(%s%s) -> %s", in.kind, in.channel, arg, res)
	},
	DescribeState: func(state any) string {
		st := state.(linState)
		if !st.exists {
			return "absent"
		}
		return fmt.Sprintf("desc=%s ttl=%d private=%t files=[%s]", st.description, st.ttl, st.private, st.files)
	},
}

// linHistory collects the operations of all clients.
type linHistory struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	// unknown are operations without a known outcome: they get their
	// return time once the run is over.
	unknown []int
}

func (h *linHistory) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *linHistory) add(client int, in linInput, call int64, out linOutput, node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if out.unknown {
		h.unknown = append(h.unknown, len(h.ops))
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: h.now(), Metadata: node})
}

// operations returns the history with every unknown operation returning
// after everything else happened.
func (h *linHistory) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	end := h.now() + 1
	for _, i := range h.unknown {
		h.ops[i].Return = end
	}
	return slices.Clone(h.ops)
}

// linClient sends one operation at a time to a node picked at random.
type linClient struct {
	id    int
	hc    *http.Client
	rng   *rand.Rand
	urls  []string
	hist  *linHistory
	files *atomic.Int64
	t     *testing.T
}

// do sends one request. sent is false when the request never reached a
// node (connection refused); status 0 means the outcome is unknown.
func (c *linClient) do(base, method, path string, body []byte) (status int, resp []byte, sent bool) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		c.t.Errorf("request: %v", err)
		return 0, nil, false
	}
	req.Header.Set("X-API-Key", nodetest.AdminKey)
	if method == http.MethodPost || method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return 0, nil, false
		}
		return 0, nil, true
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, true
	}
	return res.StatusCode, b, true
}

func (c *linClient) run(stop <-chan struct{}, channels []string) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		c.step(n, channels[c.rng.IntN(len(channels))])
	}
}

func (c *linClient) step(n int, channel string) {
	in := linInput{channel: channel}
	switch p := c.rng.IntN(100); {
	case p < 12:
		in.kind = linCreate
		in.description = fmt.Sprintf("c%d-%d", c.id, n)
		in.ttl = int64(1000 + c.rng.IntN(1000))
	case p < 24:
		in.kind, in.ttl = linPatchTTL, int64(1000+c.rng.IntN(1000))
	case p < 32:
		in.kind, in.private = linPatchPrivate, c.rng.IntN(2) == 0
	case p < 40:
		in.kind = linDelete
	case p < 60:
		in.kind = linUpload
		in.file = fmt.Sprintf("lin-%d-0.conda", c.files.Add(1))
	case p < 85:
		in.kind = linGet
	default:
		in.kind = linList
	}
	node := c.rng.IntN(len(c.urls))
	base := c.urls[node]
	ch := "/api/channels/" + channel
	var (
		method, path string
		body         []byte
	)
	switch in.kind {
	case linCreate:
		method, path = http.MethodPost, "/api/channels"
		body, _ = json.Marshal(map[string]any{"name": channel, "private": false, "description": in.description, "ttl": in.ttl})
	case linPatchTTL:
		method, path, body = http.MethodPatch, ch, []byte(fmt.Sprintf(`{"ttl":%d}`, in.ttl))
	case linPatchPrivate:
		method, path, body = http.MethodPatch, ch, []byte(fmt.Sprintf(`{"private":%t}`, in.private))
	case linDelete:
		method, path = http.MethodDelete, ch
	case linUpload:
		spec := condatest.Spec{Name: "lin", Version: strings.TrimSuffix(strings.TrimPrefix(in.file, "lin-"), "-0.conda"), Build: "0"}
		body = condatest.Conda(c.t, spec)
		method, path = http.MethodPost, ch+"/upload/"+in.file+"?sha256="+sha(body)
	case linGet:
		method, path = http.MethodGet, ch+"?consistent=true"
	case linList:
		method, path = http.MethodGet, ch+"/packages/lin/versions?consistent=true"
	}
	call := c.hist.now()
	status, resp, sent := c.do(base, method, path, body)
	if !sent {
		return
	}
	out := linOutput{status: status}
	switch {
	case status == 0 || status >= 500:
		if in.kind.read() {
			return // a failed read changed nothing
		}
		out = linOutput{unknown: true}
	case status == http.StatusNotFound || status == http.StatusConflict || status/100 == 2:
	default:
		c.t.Errorf("%s %s on node %d: unexpected %d %s", method, path, node, status, resp)
		return
	}
	if status == http.StatusOK {
		switch in.kind {
		case linGet:
			var ch struct {
				Description *string `json:"description"`
				TTL         int64   `json:"ttl"`
				Private     bool    `json:"private"`
			}
			if err := json.Unmarshal(resp, &ch); err != nil {
				c.t.Errorf("get %s: %v: %s", channel, err, resp)
				return
			}
			if ch.Description != nil {
				out.description = *ch.Description
			}
			out.ttl, out.private = ch.TTL, ch.Private
		case linList:
			var vs []struct {
				Filename string `json:"filename"`
			}
			if err := json.Unmarshal(resp, &vs); err != nil {
				c.t.Errorf("list %s: %v: %s", channel, err, resp)
				return
			}
			names := make([]string, 0, len(vs))
			for _, v := range vs {
				names = append(names, v.Filename)
			}
			slices.Sort(names)
			out.files = strings.Join(names, ",")
		}
	}
	c.hist.add(c.id, in, call, out, fmt.Sprintf("node %d", node))
}

// runLinearizability runs the clients of one seed against a new 3-node
// cluster for load, with the faults, and checks the history.
func runLinearizability(t *testing.T, seed uint64, load time.Duration) {
	c := nodetest.NewCluster(t, 3, nodetest.Partitionable)
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL() // a restarted member keeps its addresses
	}
	channels := make([]string, linChannels)
	for i := range channels {
		channels[i] = fmt.Sprintf("lin%d", i)
	}
	hist := &linHistory{start: time.Now()}
	var files atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range linClients {
		cl := &linClient{
			id:    i,
			hc:    &http.Client{Timeout: linOpTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 2}},
			rng:   rand.New(rand.NewPCG(seed, uint64(i))),
			urls:  urls,
			hist:  hist,
			files: &files,
			t:     t,
		}
		wg.Go(func() { cl.run(stop, channels) })
	}
	// Stop the clients before the nodes stop, also when a fault step
	// fails the test: clients left running keep requests in flight that
	// hold each node's graceful shutdown for its whole timeout.
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt) // runs before the nodes' cleanups (registered earlier)
	linFaults(t, c, seed, load)
	halt()

	ops := hist.operations()
	counts := map[string]int{}
	for _, op := range ops {
		k := op.Input.(linInput).kind.String()
		if op.Output.(linOutput).unknown {
			k += "?"
		}
		counts[k]++
	}
	t.Logf("seed %d: %d operations %v", seed, len(ops), counts)
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, linCheckTimeout)
	t.Logf("seed %d: porcupine: %s in %v", seed, res, time.Since(checkStart).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Logf("seed %d: porcupine did not decide within %v", seed, linCheckTimeout)
	default:
		path := linVisualization(t, info)
		t.Fatalf("seed %d: the history is not linearizable; visualization: %s\n%s", seed, path, linSummary(ops, info))
	}
}

// linSummary describes, for each channel whose history porcupine could
// not linearize, the end of the longest linearizable prefix it found and
// the first operations it could not place.
func linSummary(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	type opKey struct {
		client int
		call   int64
	}
	var b strings.Builder
	parts := linModel.Partition(ops)
	for i, lins := range info.PartialLinearizationsOperations() {
		if i >= len(parts) {
			break
		}
		var longest []porcupine.Operation
		for _, l := range lins {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if len(longest) == len(parts[i]) {
			continue
		}
		placed := map[opKey]bool{}
		for _, op := range longest {
			placed[opKey{op.ClientId, op.Call}] = true
		}
		line := func(tag string, op porcupine.Operation) {
			fmt.Fprintf(&b, "  %s %8.3fs-%8.3fs client %d %s: %s\n", tag, float64(op.Call)/1e9, float64(op.Return)/1e9, op.ClientId, op.Metadata, linModel.DescribeOperation(op.Input, op.Output))
		}
		fmt.Fprintf(&b, "channel %s: %d of %d operations linearized; the last ones:\n", parts[i][0].Input.(linInput).channel, len(longest), len(parts[i]))
		for _, op := range longest[max(0, len(longest)-8):] {
			line("ok  ", op)
		}
		var rest []porcupine.Operation
		for _, op := range parts[i] {
			if !placed[opKey{op.ClientId, op.Call}] {
				rest = append(rest, op)
			}
		}
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		for _, op := range rest[:min(len(rest), 5)] {
			line("next", op)
		}
	}
	return b.String()
}

// linFaults crashes the leader and restarts it, partitions a follower
// and heals it, then crashes a follower and restarts it, at times drawn
// from seed, and returns after load.
func linFaults(t *testing.T, c *nodetest.Cluster, seed uint64, load time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 1<<32))
	start := time.Now()
	at := func(frac float64) {
		frac += (rng.Float64() - 0.5) * 0.06
		time.Sleep(time.Until(start.Add(time.Duration(frac * float64(load)))))
	}
	index := func(n *nodetest.Node) int {
		return slices.Index(c.Nodes, n)
	}
	at(0.12)
	l := c.Leader(t)
	i := index(l)
	t.Logf("crash the leader %s", l.ID())
	l.Crash()
	at(0.3)
	c.Nodes[i] = l.Restart(t)
	t.Logf("restarted %s", l.ID())
	at(0.45)
	p := c.Followers(t)[rng.IntN(2)]
	t.Logf("partition the follower %s", p.ID())
	p.Partition()
	at(0.62)
	p.Heal()
	t.Logf("healed %s", p.ID())
	at(0.75)
	f := c.Followers(t)[rng.IntN(2)]
	i = index(f)
	t.Logf("crash the follower %s", f.ID())
	f.Crash()
	at(0.88)
	c.Nodes[i] = f.Restart(t)
	t.Logf("restarted %s", f.ID())
	time.Sleep(time.Until(start.Add(load)))
}

// linVisualization writes porcupine's view of a failed check and returns
// its path: under the test's artifacts with go test -artifacts, else in a
// directory that outlives the test.
func linVisualization(t *testing.T, info porcupine.LinearizationInfo) string {
	dir := ""
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		dir = t.ArtifactDir()
	} else {
		var err error
		if dir, err = os.MkdirTemp("", "condamesh-linearizability-"); err != nil {
			t.Fatalf("visualization dir: %v", err)
		}
	}
	path := filepath.Join(dir, "linearizability.html")
	if err := porcupine.VisualizePath(linModel, info, path); err != nil {
		t.Fatalf("visualization: %v", err)
	}
	return path
}
