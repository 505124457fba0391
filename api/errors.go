package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/cluster"
	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
)

// Error kinds of the API. Each maps to one HTTP status and one Connect code.
var (
	ErrBadRequest      = errors.New("api: bad request")             // 400
	ErrUnauthenticated = errors.New("api: not logged in")           // 401
	ErrForbidden       = errors.New("api: forbidden")               // 403
	ErrNotFound        = errors.New("api: not found")               // 404
	ErrNotAllowed      = errors.New("api: method not allowed")      // 405
	ErrNotAcceptable   = errors.New("api: not acceptable")          // 406
	ErrConflict        = errors.New("api: conflict")                // 409
	ErrTooLarge        = errors.New("api: request too large")       // 413
	ErrInvalid         = errors.New("api: unprocessable entity")    // 422
	ErrUnavailable     = errors.New("api: temporarily unavailable") // 503
)

// Error is an API error with the detail clients see: a string, or for
// Quetz's server-role failures a one-element list of strings.
type Error struct {
	Kind   error
	Detail any
}

func (e *Error) Error() string { return fmt.Sprintf("%v: %v", e.Kind, e.Detail) }

// Unwrap lets errors.Is match the kind.
func (e *Error) Unwrap() error { return e.Kind }

func apiErr(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// Standard details of Quetz.
var (
	errNotLoggedIn  = &Error{Kind: ErrUnauthenticated, Detail: "Not logged in"}
	errNoPermission = &Error{Kind: ErrForbidden, Detail: "No permission"}
)

func errServerRole(msg string) *Error { return &Error{Kind: ErrForbidden, Detail: []string{msg}} }

// classify maps any error to an *Error. Unknown errors are internal (500)
// and their text is not shown to clients.
func classify(err error) (status int, code connect.Code, detail any) {
	var ae *Error
	if errors.As(err, &ae) {
		st, cd := kindStatus(ae.Kind)
		return st, cd, ae.Detail
	}
	var dm *store.DigestMismatchError
	var re *catalog.RuleError
	switch {
	case errors.As(err, &re):
		if re.Type == "" {
			return http.StatusUnprocessableEntity, connect.CodeInvalidArgument, re.Msg
		}
		loc := []any{"body"}
		for _, f := range re.Field {
			loc = append(loc, f)
		}
		return http.StatusUnprocessableEntity, connect.CodeInvalidArgument, []fieldError{{Type: re.Type, Loc: loc, Msg: re.Msg, Input: re.Input}}
	case errors.As(err, &dm):
		return http.StatusNotAcceptable, connect.CodeInvalidArgument, "Wrong SHA256 checksum"
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, connect.CodeNotFound, err.Error()
	case errors.Is(err, catalog.ErrLastOwner):
		return http.StatusConflict, connect.CodeFailedPrecondition, "the last server owner cannot be demoted"
	case errors.Is(err, catalog.ErrExists):
		return http.StatusConflict, connect.CodeAlreadyExists, err.Error()
	case errors.Is(err, catalog.ErrStatusChanged):
		return http.StatusConflict, connect.CodeAborted, err.Error()
	case errors.Is(err, catalog.ErrQuota), errors.Is(err, store.ErrTooLarge):
		return http.StatusUnprocessableEntity, connect.CodeResourceExhausted, err.Error()
	case errors.Is(err, catalog.ErrInvalid):
		return http.StatusUnprocessableEntity, connect.CodeInvalidArgument, err.Error()
	case errors.Is(err, conda.ErrIndexMismatch), errors.Is(err, conda.ErrBadArchive), errors.Is(err, conda.ErrUnsafeArchive),
		errors.Is(err, conda.ErrMissingIndex), errors.Is(err, conda.ErrBadIndex), errors.Is(err, conda.ErrBadFilename):
		return http.StatusBadRequest, connect.CodeInvalidArgument, err.Error()
	case errors.Is(err, upstream.ErrTimeout):
		return http.StatusGatewayTimeout, connect.CodeUnavailable, "upstream channel timed out: " + err.Error()
	case errors.Is(err, upstream.ErrUnavailable), errors.Is(err, upstream.ErrRefused), errors.Is(err, proxy.ErrCorrupt),
		errors.Is(err, proxy.ErrTooLarge):
		return http.StatusBadGateway, connect.CodeUnavailable, "upstream channel failed: " + err.Error()
	case errors.Is(err, proxy.ErrNotFound), errors.Is(err, upstream.ErrNotFound):
		return http.StatusNotFound, connect.CodeNotFound, err.Error()
	case errors.Is(err, errSlowBody):
		return http.StatusRequestTimeout, connect.CodeDeadlineExceeded, "request body arrived too slowly"
	case errors.Is(err, cluster.ErrNotLeader):
		return http.StatusServiceUnavailable, connect.CodeUnavailable, "no cluster leader reachable, retry"
	case errors.Is(err, cluster.ErrUnknownNode):
		return http.StatusNotFound, connect.CodeNotFound, err.Error()
	case errors.Is(err, cluster.ErrNoQuorum), errors.Is(err, cluster.ErrOtherCluster):
		return http.StatusConflict, connect.CodeFailedPrecondition, err.Error()
	case errors.Is(err, cluster.ErrUnsupportedCommand):
		return http.StatusServiceUnavailable, connect.CodeUnavailable, err.Error()
	case errors.Is(err, cluster.ErrJoin):
		return http.StatusBadGateway, connect.CodeUnavailable, err.Error()
	case errors.Is(err, cluster.ErrConfig):
		return http.StatusUnprocessableEntity, connect.CodeInvalidArgument, err.Error()
	case errors.Is(err, catalog.ErrApply):
		return http.StatusInternalServerError, connect.CodeInternal, "Internal Server Error"
	case errors.Is(err, cluster.ErrHalted):
		return http.StatusServiceUnavailable, connect.CodeUnavailable, "this node stopped applying the replicated log (an entry needs a newer condamesh); use another node"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, connect.CodeDeadlineExceeded, "deadline exceeded"
	case errors.Is(err, context.Canceled):
		return 499, connect.CodeCanceled, "request cancelled"
	}
	return http.StatusInternalServerError, connect.CodeInternal, "Internal Server Error"
}

func kindStatus(kind error) (int, connect.Code) {
	switch kind {
	case ErrBadRequest:
		return http.StatusBadRequest, connect.CodeInvalidArgument
	case ErrUnauthenticated:
		return http.StatusUnauthorized, connect.CodeUnauthenticated
	case ErrForbidden:
		return http.StatusForbidden, connect.CodePermissionDenied
	case ErrNotFound:
		return http.StatusNotFound, connect.CodeNotFound
	case ErrNotAllowed:
		return http.StatusMethodNotAllowed, connect.CodeUnimplemented
	case ErrNotAcceptable:
		return http.StatusNotAcceptable, connect.CodeInvalidArgument
	case ErrConflict:
		return http.StatusConflict, connect.CodeAlreadyExists
	case ErrTooLarge:
		return http.StatusRequestEntityTooLarge, connect.CodeResourceExhausted
	case ErrInvalid:
		return http.StatusUnprocessableEntity, connect.CodeInvalidArgument
	case ErrUnavailable:
		return http.StatusServiceUnavailable, connect.CodeUnavailable
	}
	return http.StatusInternalServerError, connect.CodeInternal
}

// connectError translates err for Connect clients.
func connectError(err error) error {
	if err == nil {
		return nil
	}
	_, code, detail := classify(err)
	if fes, ok := detail.([]fieldError); ok {
		msgs := make([]string, 0, len(fes))
		for _, fe := range fes {
			msgs = append(msgs, fmt.Sprintf("%v: %s", fe.Loc[1:], fe.Msg))
		}
		detail = strings.Join(msgs, "; ")
	}
	return connect.NewError(code, fmt.Errorf("%v", detail))
}
