// Package server implements Parley's Connect services and the HTTP handler that
// serves them: authentication middleware, interceptors (validation, errors,
// logging, metrics), health, reflection and CORS.
//
// Handlers are thin: validate what the proto cannot, authorize, run sqlc
// queries in one transaction, publish events after commit, and map errors to
// Connect codes in one place (errors.go).
package server
