# condamesh — make help lists the targets.
SHELL := /bin/bash
BIN := $(CURDIR)/.tmp/bin
export PATH := $(BIN):$(PATH)
BUF_VERSION := v1.75.0
GO_TEST_FLAGS ?=

.PHONY: help
help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-15s %s\n", $$1, $$2}'

.PHONY: build
build: ## build ./condamesh
	go build -o condamesh ./cmd/condamesh

.PHONY: run
run: ## run a single node on the embedded default (./condamesh-data, 127.0.0.1:8000)
	go run ./cmd/condamesh serve

.PHONY: deps
deps: ## install what the tests need: Debian packages (cph, nginx, wrk, zstd) and the npm conda client
	./scripts/install-test-deps.sh

.PHONY: test
test: deps ## run every test (unit, conformance, REST, end-to-end with rattler, cph and nginx), then the in-process ones again under the race detector
	go test $(GO_TEST_FLAGS) -count=1 -timeout 40m ./...
	go test $(GO_TEST_FLAGS) -race -count=1 -timeout 40m $$(go list ./... | grep -v /e2e)

.PHONY: fuzz-smoke
fuzz-smoke: ## run each fuzz target for 10 s
	go test ./conda -run '^$$' -fuzz '^FuzzParseFilename$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzReadPackage$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzParseRepodata$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzParseJSON$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzScanRepodata$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzScanRepodataReader$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzScanShardPairs$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzIdentify$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzBzip2Parallel$$' -fuzztime 10s -fuzzminimizetime 2s
	go test ./conda -run '^$$' -fuzz '^FuzzGlob$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzCurrentCache$$' -fuzztime 10s
	go test ./conda -run '^$$' -fuzz '^FuzzUpstreamShards$$' -fuzztime 10s
	go test ./cluster -run '^$$' -fuzz '^FuzzDecodeCommand$$' -fuzztime 10s
	go test ./cluster -run '^$$' -fuzz '^FuzzDecodeMeta$$' -fuzztime 10s
	go test ./hotpath -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime 10s
	go test ./upstream -run '^$$' -fuzz '^FuzzReadPlainHead$$' -fuzztime 10s
	go test ./internal/secret -run '^$$' -fuzz '^FuzzURL$$' -fuzztime 10s
	go test ./internal/secret -run '^$$' -fuzz '^FuzzText$$' -fuzztime 10s
	go test ./upstream -run '^$$' -fuzz '^FuzzJoin$$' -fuzztime 10s
	go test ./proxy -run '^$$' -fuzz '^FuzzCheckPath$$' -fuzztime 10s
	go test ./proxy -run '^$$' -fuzz '^FuzzDecodeSet$$' -fuzztime 10s
	go test ./api -run '^$$' -fuzz '^FuzzParseSearch$$' -fuzztime 10s
	go test ./api -run '^$$' -fuzz '^FuzzAcceptsGzip$$' -fuzztime 10s
	go test ./jobs -run '^$$' -fuzz '^FuzzParseItemsSpec$$' -fuzztime 10s

.PHONY: bench
bench: deps ## run the Go benchmarks (figures go to docs/BENCHMARKS.md)
	go test -run '^$$' -bench . -benchtime 3x ./store ./conda

.PHONY: bench-forge
bench-forge: deps ## issue 11's conda-forge-scale benchmark: 500k+100k generated records behind nginx (CONDAMESH_FORGE_RECORDS=100000 for a smaller run)
	go test ./e2e -run '^$$' -bench ForgeScale -benchtime 1x -timeout 60m

.PHONY: tools
tools: ## install buf and the protoc plugins into .tmp/bin (versions from go.mod; buf pinned)
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go
	GOBIN=$(BIN) go install connectrpc.com/connect/cmd/protoc-gen-connect-go
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

.PHONY: generate
generate: tools ## regenerate gen/ from proto/
	buf generate

.PHONY: checkgenerate
checkgenerate: generate ## fail if gen/ is not what proto/ generates
	@test -z "$$(git status --porcelain -- gen proto)" || (git status --porcelain -- gen proto; echo "gen/ is stale: run make generate"; exit 1)

.PHONY: lint
lint: tools ## gofmt, go vet, shellcheck, buf lint and format
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1)
	go vet ./...
	shellcheck deploy/local-cluster.sh scripts/install-test-deps.sh
	buf lint
	buf format -d --exit-code
