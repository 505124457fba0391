// Package api is condamesh's one http.Handler: the Quetz-compatible REST API
// under /api, conda serving under /get (and /t/<token>/get), the Connect
// services of proto/condamesh/v1, health checks, and the OpenAPI document.
// REST and Connect call the same operations (service.go); every error is
// translated to an HTTP status and detail, or a Connect code, in errors.go.
// The package holds only small interfaces onto the cluster (Proposer), the
// blob store and the indexer; node wires the concrete types.
package api
