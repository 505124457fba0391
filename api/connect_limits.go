package api

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
)

// Bounds of a Connect call. A request message is small (names, flags, a
// channel's metadata); answers can list every package of a channel.
const (
	// connectReadMax bounds one request message after decompression, so a
	// small gzip body cannot expand into gigabytes (connect-go checks it
	// while it decompresses).
	connectReadMax = maxJSONBody
	// connectAnonWireMax bounds the bytes an anonymous caller may send:
	// every anonymous RPC is a lookup by name. It is checked before the
	// body is read, on the wire bytes (compressed or not).
	connectAnonWireMax = 64 << 10
	// connectSendMax bounds one answer message.
	connectSendMax = 64 << 20
)

// connectOptions are the handler options of every Connect service.
func connectOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(connectReadMax),
		connect.WithSendMaxBytes(connectSendMax),
	}
}

type callerKey struct{}

// authenticateFirst resolves the caller from the request headers before a
// Connect handler reads the body, and bounds what an anonymous caller may
// send on the wire (authenticated callers are bounded by connectReadMax
// after decompression, and by connectReadMax on the wire too).
func (s *Server) authenticateFirst(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.identify(r.Context(), r.Header)
		if err != nil {
			s.writeConnectError(w, r, err)
			return
		}
		limit := int64(connectReadMax)
		if id.anonymous() {
			limit = connectAnonWireMax
		}
		if r.ContentLength > limit {
			s.writeConnectError(w, r, apiErr(ErrTooLarge, "request body larger than %d bytes", limit))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, id)))
	})
}

// writeConnectError answers a call refused before its handler ran, in the
// protocol the caller speaks (Connect, gRPC or gRPC-Web).
func (s *Server) writeConnectError(w http.ResponseWriter, r *http.Request, err error) {
	ew := connect.NewErrorWriter()
	if !ew.IsSupported(r) {
		s.writeError(w, r, err)
		return
	}
	if werr := ew.Write(w, r, connectError(err).(*connect.Error)); werr != nil {
		s.log.Debug("connect error answer", "err", werr)
	}
}
