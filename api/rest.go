package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxJSONBody bounds a JSON request body.
const maxJSONBody = 1 << 20

// fieldError is one entry of a FastAPI/pydantic 422 detail list.
type fieldError struct {
	Type  string `json:"type"`
	Loc   []any  `json:"loc"`
	Msg   string `json:"msg"`
	Input any    `json:"input"`
}

func validation(loc []any, typ, msg string, input any) *Error {
	return &Error{Kind: ErrInvalid, Detail: []fieldError{{Type: typ, Loc: loc, Msg: msg, Input: input}}}
}

// decodeBody reads a JSON object body into fields keyed by name, so
// handlers can tell "absent" from "null".
func decodeBody(r *http.Request) (map[string]json.RawMessage, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	if errors.Is(err, errSlowBody) {
		return nil, err
	}
	if err != nil {
		return nil, apiErr(ErrBadRequest, "could not read request body")
	}
	if len(body) > maxJSONBody {
		return nil, apiErr(ErrTooLarge, "request body larger than %d bytes", maxJSONBody)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, validation([]any{"body"}, "json_invalid", "JSON decode error", string(body))
	}
	return fields, nil
}

func isNull(raw json.RawMessage) bool { return raw == nil || string(raw) == "null" }

// field decodes one body field into dst; absent or null leaves dst alone and
// returns false.
func field[T any](fields map[string]json.RawMessage, name string, dst *T, typ string) (bool, error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return false, nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		var input any
		_ = json.Unmarshal(raw, &input)
		return false, validation([]any{"body", name}, typ+"_type", fmt.Sprintf("Input should be a valid %s", typ), input)
	}
	return true, nil
}

// nonNullField decodes a field that may be absent but not null (a
// non-optional pydantic field).
func nonNullField[T any](fields map[string]json.RawMessage, name string, dst *T, typ string) error {
	if raw, ok := fields[name]; ok && isNull(raw) {
		return validation([]any{"body", name}, typ+"_type", fmt.Sprintf("Input should be a valid %s", typ), nil)
	}
	_, err := field(fields, name, dst, typ)
	return err
}

// queryBool parses a FastAPI-style boolean query parameter.
func queryBool(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	return parseBool([]any{"query", name}, v)
}

// maxBoolField is the most of a form field parseBool reads: longer values
// are refused as they are (no boolean is that long).
const maxBoolField = 16

// parseBool reads a boolean as FastAPI (pydantic 2) does for query
// parameters and form fields: true, false, 1, 0, yes, no, on, off, t, f,
// y and n in any case; anything else is a 422 at loc.
func parseBool(loc []any, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "on", "yes", "t", "y":
		return true, nil
	case "0", "false", "off", "no", "f", "n":
		return false, nil
	}
	return false, validation(loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", v)
}

func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, validation([]any{"query", name}, "int_parsing", "Input should be a valid integer, unable to parse string as an integer", v)
	}
	return n, nil
}

// page applies Quetz's skip/limit (limit -1 = all) to n items.
func page(r *http.Request) (skip, limit int, err error) {
	if skip, err = queryInt(r, "skip", 0); err != nil {
		return
	}
	limit, err = queryInt(r, "limit", 20)
	return
}

func paginate[T any](items []T, skip, limit int) []T {
	if skip < 0 {
		skip = 0
	}
	if skip > len(items) {
		return []T{}
	}
	items = items[skip:]
	if limit >= 0 && limit < len(items) {
		items = items[:limit]
	}
	return items
}

type pagination struct {
	Skip            int `json:"skip"`
	Limit           int `json:"limit"`
	AllRecordsCount int `json:"all_records_count"`
}

func paginated[T any](r *http.Request, items []T) (any, error) {
	return paginatedAs(r, items, func(x T) T { return x })
}

// paginatedAs is paginated answering each item of the page as conv makes
// it (only the page's items are converted).
func paginatedAs[T, U any](r *http.Request, items []T, conv func(T) U) (any, error) {
	skip, limit, err := page(r)
	if err != nil {
		return nil, err
	}
	pg := paginate(items, skip, limit)
	out := make([]U, len(pg))
	for i, x := range pg {
		out[i] = conv(x)
	}
	return map[string]any{
		"pagination": pagination{Skip: skip, Limit: limit, AllRecordsCount: len(items)},
		"result":     out,
	}, nil
}

// serveList answers the list a handler computes: as a bare JSON array, or
// (paged) in the pagination envelope, with skip and limit checked first
// (FastAPI validates query parameters before the handler runs).
func serveList[T any](s *Server, w http.ResponseWriter, r *http.Request, paged bool, list func(id *identity) ([]T, error)) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if paged {
			if _, _, err := page(r); err != nil {
				return 0, nil, err
			}
		}
		out, err := list(id)
		if err != nil || !paged {
			return http.StatusOK, out, err
		}
		body, err := paginated(r, out)
		return http.StatusOK, body, err
	})
}

// naive formats a time as Quetz does: ISO-8601 without zone, meaning UTC.
func naive(unix int64) string {
	if unix == 0 {
		return ""
	}
	return time.Unix(unix, 0).UTC().Format("2006-01-02T15:04:05")
}

// handle adapts a handler returning (status, body, error) to http.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, fn func(id *identity) (int, any, error)) {
	id, err := s.identify(r.Context(), r.Header)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status, body, err := fn(id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, status, body)
}
