# Parley's tasks. `make help` lists them.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

GOBIN := $(shell go env GOBIN)
ifeq ($(GOBIN),)
GOBIN := $(shell go env GOPATH)/bin
endif
BUF  := node_modules/.bin/buf
SQLC := $(GOBIN)/sqlc
# The test suite's timeout: well above its real run time, to stop a hang.
TEST_TIMEOUT ?= 20m

.PHONY: help
help: ## Describe the tasks
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: run
run: ## Install what is missing and run Parley on its embedded PostgreSQL (:8080)
	@scripts/ensure-packages.sh postgres
	go build -o bin/parley ./cmd/parley
	exec bin/parley serve

.PHONY: build
build: ## Build the parley binary into bin/
	go build -o bin/parley ./cmd/parley

.PHONY: test
test: ## Install what is missing and run every test: Go with the race detector, then the browser test
	@scripts/ensure-packages.sh postgres redis gcc
	@scripts/ensure-test-tools.sh
	@PROGRESS_INTERVAL=60 scripts/progress.sh "go test: building the test binaries with the race detector, then running them" \
		"10 minutes the first time on 2 cores, 6 once Go's build cache is warm; each package's result prints when it is done" \
		env CGO_ENABLED=1 go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	@$(MAKE) --no-print-directory test-browser

.PHONY: test-fresh
test-fresh: ## Run the Go tests as on a fresh machine: their own PostgreSQL and Redis, loopback only
	TEST_TIMEOUT=$(TEST_TIMEOUT) scripts/test-fresh.sh

.PHONY: test-browser
test-browser: ## Install Chromium if missing and run the browser call test (web/)
	scripts/browser-test.sh

.PHONY: web
web: ## Build the web call page into web/dist (serve it with PARLEY_WEB_DIR=web/dist)
	@scripts/ensure-web.sh
	cd web && npm run --silent build

.PHONY: tools
tools: ## Install the pinned code generators (buf, protoc-gen-es, sqlc)
	@scripts/ensure-tools.sh

.PHONY: generate
generate: tools ## Regenerate gen/ (buf) and db/ (sqlc) from proto/ and queries/
	$(BUF) generate
	$(SQLC) generate

.PHONY: checkgenerate
checkgenerate: generate ## Fail when generated code differs from its sources
	@if [ -n "$$(git status --porcelain -- gen db)" ]; then \
		echo "generated code is out of date; run make generate and commit:"; \
		git status --porcelain -- gen db; git diff --stat -- gen db; exit 1; fi

.PHONY: lint
lint: tools ## buf lint, buf format check, gofmt and go vet
	$(BUF) lint
	$(BUF) format --diff --exit-code proto
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1; }
	go vet ./...

# How long make fuzz runs each fuzz target: a duration, or a count such as 1000x.
FUZZTIME ?= 60s

.PHONY: fuzz
fuzz: ## Run every Go fuzz target for FUZZTIME each (default 60s; make fuzz FUZZTIME=10m)
	@scripts/ensure-packages.sh postgres
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh
