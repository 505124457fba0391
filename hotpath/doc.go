// Package hotpath serves the hot read path of a conda channel server, the
// GET and HEAD requests of conda clients for channel files, with a lean
// HTTP/1.1 connection loop, and hands every other connection to a
// net/http server.
//
// A conda client mostly revalidates small index files (304) and fetches
// small shards; at those sizes net/http's per-request machinery (request
// parsing through textproto, a context and a background read per request,
// chunking writers) costs more than the answer. The loop here parses a
// strict subset of HTTP/1.1 — a bodiless GET or HEAD in origin-form with
// well-formed header lines — and calls the same http.Handler with its own
// ResponseWriter (keep-alive, pipelining, Content-Length or chunked
// framing, sendfile through io.ReaderFrom). At the first request outside
// that subset the connection, with the bytes already read, goes to the
// fallback net/http server for the rest of its life, so uploads, the REST
// and Connect APIs, h2c and every malformed request get net/http's
// complete behaviour. The parser therefore only has to be right about
// what it accepts; FuzzParseRequest checks it against net/http's server
// (its reader and the checks its connection loop adds, Host included),
// and TestRawHeadsAsNetHTTP compares the bytes both send back for
// pipelined, closing and malformed requests. Like net/http, the loop sends
// every answer before it waits for more bytes or closes, and after an
// answer that closes the connection it half-closes and drains what the
// client still sends, so that a reset cannot destroy the answer.
package hotpath
