package node_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestConnectionCap: a node with --max-conns 3 keeps three connections
// open, closes a fourth at accept, and takes a new one once a slot frees.
func TestConnectionCap(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.MaxConns = 3 })
	addr := strings.TrimPrefix(n.URL(), "http://")
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The held connections are served (a request on the last one answers).
	if st := get(t, held[2]); st != 200 {
		t.Fatalf("held connection: status %d", st)
	}
	over, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := over.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Fatalf("connection over the cap: read %v, want it closed", err)
	}
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		st := get(t, c)
		c.Close()
		if st == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot came free after a held connection closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

// get sends GET /health/live on c and returns the status, or 0 if the
// connection was closed.
func get(t *testing.T, c net.Conn) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSlowBodyIsCut: a request body that trickles below the minimum rate
// is cut (408, connection closed) long before it would have finished,
// while a body at a good rate is read whole.
func TestSlowBodyIsCut(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.API.BodyMinRate = 1 << 10
		c.API.BodyGrace = 500 * time.Millisecond
	})
	addr := strings.TrimPrefix(n.URL(), "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 64 << 10 // at 10 bytes per 100 ms: 11 minutes
	fmt.Fprintf(c, "POST /api/channels HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", nodetest.AdminKey, size)
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		for sent := 0; sent < size; sent += 10 {
			if _, err := c.Write(bytes.Repeat([]byte{' '}, 10)); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a trickling body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("trickling body: status %d, want 408", resp.StatusCode)
	}
	select {
	case <-cut:
	case <-time.After(30 * time.Second):
		t.Fatal("the server kept reading a body below the minimum rate")
	}

	// A body at a good rate is unaffected (a JSON body answered 201).
	body := `{"name": "paced", "private": false}`
	req, _ := http.NewRequest("POST", n.URL()+"/api/channels", strings.NewReader(body))
	req.Header.Set("X-API-Key", nodetest.AdminKey)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("normal body: status %d", resp.StatusCode)
	}
}

// TestConnectionCapPerClient: one client address holds at most
// --max-conns-per-ip connections; another address still gets in.
func TestConnectionCapPerClient(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.MaxConns, c.MaxConnsPerIP = 100, 2 })
	addr := strings.TrimPrefix(n.URL(), "http://")
	dialFrom := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a1, a2 := dialFrom("127.0.0.1"), dialFrom("127.0.0.1")
	if get(t, a1) != 200 || get(t, a2) != 200 {
		t.Fatal("the first two connections of a client are served")
	}
	if st := get(t, dialFrom("127.0.0.1")); st != 0 {
		t.Fatalf("a third connection from the same address: status %d, want it closed", st)
	}
	if st := get(t, dialFrom("127.0.0.2")); st != 200 {
		t.Fatalf("another client address: status %d", st)
	}
	a1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for get(t, dialFrom("127.0.0.1")) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the client got no slot back after closing a connection")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
