package api

import (
	"net/http"
	"regexp"
	"strings"
)

// operation is one REST route: its ServeMux pattern, OpenAPI tag and summary.
// The route table in routes() is the single source of both the mux and the
// OpenAPI document, so the two cannot drift apart.
type operation struct {
	pattern string
	tag     string
	summary string
	handler http.HandlerFunc
}

var pathParamRe = regexp.MustCompile(`\{([a-z_]+)(\.\.\.)?\}`)

// openAPIDoc builds the OpenAPI 3.1 document of the REST routes.
func (s *Server) openAPIDoc() map[string]any {
	paths := map[string]map[string]any{}
	errorResp := map[string]any{"description": "Error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	for _, op := range s.ops {
		method, pat, _ := strings.Cut(op.pattern, " ")
		pat = strings.TrimSuffix(pat, "{$}")
		var params []map[string]any
		for _, m := range pathParamRe.FindAllStringSubmatch(pat, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		path := pathParamRe.ReplaceAllString(pat, "{$1}")
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		entry := map[string]any{
			"tags":        []string{op.tag},
			"summary":     op.summary,
			"operationId": strings.ToLower(method) + strings.NewReplacer("/", "_", "{", "", "}", "", "-", "_").Replace(path),
			"responses": map[string]any{
				"200":     map[string]any{"description": "OK"},
				"default": errorResp,
			},
		}
		if len(params) > 0 {
			entry["parameters"] = params
		}
		paths[path][strings.ToLower(method)] = entry
	}
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "condamesh",
			"description": "Quetz-compatible REST API of a condamesh node. Conda clients use /get/{channel}. Authenticate with the X-API-Key header or a /t/{key}/ path prefix. The same operations are Connect/gRPC services (proto/condamesh/v1).",
			"version":     "v1",
		},
		"components": map[string]any{
			"securitySchemes": map[string]any{"APIKeyHeader": map[string]any{"type": "apiKey", "in": "header", "name": "X-API-Key"}},
			"schemas": map[string]any{"Error": map[string]any{
				"type":       "object",
				"properties": map[string]any{"detail": map[string]any{"description": "a message, a list with one message, or a list of validation errors"}},
			}},
		},
		"security": []map[string]any{{"APIKeyHeader": []string{}}},
		"paths":    paths,
	}
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.openAPIDoc())
}

// swaggerUI serves the Swagger UI page for /openapi.json, loading the UI
// from a CDN as FastAPI (and so Quetz) does.
func (s *Server) swaggerUI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(`<!doctype html>
<html><head><meta charset="utf-8"><title>condamesh API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>
`))
}
