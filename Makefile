# spaces-authz: the two commands that matter are `make up` (a local stack)
# and `make test` (everything, e2e included). Both install what they need
# into .cache/ through the package registries (Go proxy, npm).
SHELL := /bin/bash
ROOT := $(CURDIR)
export GOBIN := $(ROOT)/.cache/bin
export PATH := $(GOBIN):$(PATH)
export SPICEDB_BIN := $(GOBIN)/spicedb
export NATS_SERVER_BIN := $(GOBIN)/nats-server
export RELAY_BIN := $(GOBIN)/relay
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
GO_TEST_FLAGS ?=

.PHONY: all deps build test test-unit test-e2e lint fmt vet up bench clean

all: build

deps:
	scripts/deps.sh

build:
	go build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/consumer ./cmd/consumer

vet:
	go vet ./...
	go vet -tags e2e ./...

lint:
	DEPS_PDS=0 DEPS_LINT=1 scripts/deps.sh
	golangci-lint run ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# The test command: installs SpiceDB, nats-server, indigo's relay, sqlite3
# and PostgreSQL (when absent), Node 22 and the reference PDS, then runs the unit, integration, crash and
# e2e tests for real.
test: deps vet test-unit test-e2e

test-unit:
	go test -race -count=1 -timeout 30m $(GO_TEST_FLAGS) ./...

test-e2e:
	go test -count=1 -timeout 45m -tags e2e -v $(GO_TEST_FLAGS) ./e2e/ ./internal/testrig/localpds/ ./internal/testrig/federation/ 2>&1 | tee .cache/e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go'; \
	rc=$${PIPESTATUS[0]}; if [ $$rc -ne 0 ]; then scripts/failed-output.sh .cache/e2e.log; fi; exit $$rc

# The main job: a local stack on loopback (PDS + PLC, SpiceDB, NATS, the
# consumer), seeded with a demo, running until Ctrl-C. SpiceDB runs on its
# memory datastore; `make up DATASTORE=postgres` runs it on a throwaway
# PostgreSQL cluster instead. `make up FEDERATED=1` runs the federated stack:
# two PDSs on one PLC, indigo's relay crawling both, SpiceDB and the consumer
# following the relay, with a demo of a grant on one PDS to a group on the other.
DATASTORE ?= memory
FEDERATED ?=
up: deps build
	go build -o bin/localstack ./cmd/localstack
	bin/localstack --consumer bin/consumer --datastore $(DATASTORE)$(if $(filter-out 0,$(FEDERATED)), --federated)

# The performance figures of BENCHMARKS.md, each against its baseline.
bench: deps
	go test -run '^$$' -bench . -benchtime 1x -timeout 120m ./firehose ./projector ./fanout ./spice ./cmd/consumer
	go test -tags e2e -run '^$$' -bench . -benchtime 1x ./e2e

clean:
	rm -rf bin
