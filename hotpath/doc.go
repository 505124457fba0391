// Package hotpath serves the hot read path of a conda channel server, the
// GET and HEAD requests of conda clients for channel files, with a lean
// HTTP/1.1 connection loop, and hands every other connection to a
// net/http server.
//
// Why it is hand-written: a conda client mostly revalidates small index
// files (304) and fetches small shards, and at those sizes net/http's
// per-request machinery (request parsing through textproto, a context and
// a background read per request, chunking writers) costs more than the
// answer. Measured against nginx on 304 revalidations (docs/BENCHMARKS.md),
// net/http was the ceiling: a do-nothing handler reached 0.71× nginx, the
// node 0.60–0.65×; this loop alone took the node to 0.74×, and with the
// handler's own savings to 0.86–1.02×.
//
// The loop parses a strict subset of HTTP/1.1 — a bodiless GET or HEAD in
// origin-form with CRLF-ended, well-formed header lines and a Host
// net/http accepts — and calls the same http.Handler with its own
// ResponseWriter (keep-alive, pipelining, Content-Length or chunked
// framing, sendfile through io.ReaderFrom). At the first request outside
// that subset the connection, with the bytes already read, goes to the
// fallback net/http server for the rest of its life, so uploads, the REST
// and Connect APIs, h2c and every malformed request get net/http's
// complete behaviour. The parser therefore only has to be right about
// what it accepts: FuzzParseRequest fuzzes it against net/http's server
// (its reader and the checks its connection loop adds, Host included),
// TestSameAnswersAsNetHTTP compares the answers of both for the same
// handlers, and TestRawHeadsAsNetHTTP the bytes both send back for
// pipelined, closing and malformed requests. Like net/http, the loop sends
// every answer before it waits for more bytes or closes, and after an
// answer that closes the connection it half-closes and drains what the
// client still sends, so that a reset cannot destroy the answer.
//
// A node can do without it: `condamesh serve --lean-http=false`
// (CONDAMESH_LEAN_HTTP=false, node.Config.NoLeanHTTP) serves every
// request with net/http alone.
package hotpath
