package upstream

import (
	"bufio"
	"bytes"
	"github.com/condamesh/condamesh/internal/httpsyntax"
	"io"
	"net/http"
)

// response is what the pipeline needs of an answer.
type response struct {
	status int
	body   io.Reader
	close  bool // the upstream ends the connection after it
}

// readResponse reads the next answer on a pipelined connection. Most
// answers of a static file server are plain (see readPlainHead) and are
// read without net/http, whose general parser was a good part of the
// pipeline's cost per small file; anything else goes to
// http.ReadResponse.
func readResponse(br *bufio.Reader) (response, error) {
	if status, length, closeConn, ok := readPlainHead(br); ok {
		return response{status: status, body: &fixedBody{r: br, n: length}, close: closeConn}, nil
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, body: resp.Body, close: resp.Close}, nil
}

// maxPlainHead bounds the head readPlainHead looks at.
const maxPlainHead = 16 << 10

// readPlainHead consumes a plain response head from br: HTTP/1.1, a
// status from 200 to 599 other than 204 and 304, exactly one
// Content-Length of digits, no Transfer-Encoding, a Connection field (if
// any) of "close" or "keep-alive", and well-formed header lines without
// folding. For anything else it consumes nothing and ok is false.
// FuzzReadPlainHead holds it to http.ReadResponse.
func readPlainHead(br *bufio.Reader) (status int, length int64, closeConn, ok bool) {
	var head []byte
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head = buf[:i+4]
			break
		}
		if br.Buffered() >= maxPlainHead {
			return 0, 0, false, false
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return 0, 0, false, false // net/http reports it
		}
	}
	end := bytes.Index(head, []byte("\r\n"))
	line := head[:end]
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, false, false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, false, false
		}
		status = status*10 + int(c-'0')
	}
	if status < 200 || status > 599 || status == http.StatusNoContent || status == http.StatusNotModified || !httpsyntax.FieldValue(line[12:]) {
		return 0, 0, false, false
	}
	length = -1
	for rest := head[end+2 : len(head)-2]; len(rest) > 0; {
		e := bytes.Index(rest, []byte("\r\n"))
		line, rest = rest[:e], rest[e+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !httpsyntax.Token(line[:colon]) {
			return 0, 0, false, false
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		if !httpsyntax.FieldValue(value) {
			return 0, 0, false, false
		}
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length >= 0 || len(value) == 0 || len(value) > 18 {
				return 0, 0, false, false
			}
			length = 0
			for _, c := range value {
				if c < '0' || c > '9' {
					return 0, 0, false, false
				}
				length = length*10 + int64(c-'0')
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, 0, false, false
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				closeConn = true
			case !bytes.EqualFold(value, []byte("keep-alive")):
				return 0, 0, false, false
			}
		}
	}
	if length < 0 {
		return 0, 0, false, false
	}
	_, _ = br.Discard(len(head))
	return status, length, closeConn, true
}

// fixedBody reads the length bytes of a body; a connection that ends
// before them is io.ErrUnexpectedEOF, never a short body.
type fixedBody struct {
	r *bufio.Reader
	n int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	m, err := b.r.Read(p)
	b.n -= int64(m)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return m, err
}
