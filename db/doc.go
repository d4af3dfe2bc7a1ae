// Package db is Parley's data layer: the sqlc-generated queries (from queries/),
// the embedded migrations, and a small handle that binds the queries to a pgx
// pool and runs transactions.
//
// PostgreSQL is the only source of truth; everything else holds live state only.
package db
