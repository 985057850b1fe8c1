# mcpgate — run `make help` for the targets.
SHELL   := /bin/bash
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# BUILD_ID empty: the id comes from the Go build id of the binary itself.
BUILD_ID ?=
PKG     := github.com/mcpgate/mcpgate
LDFLAGS := -X $(PKG)/internal/buildinfo.version=$(VERSION) $(if $(BUILD_ID),-X $(PKG)/internal/buildinfo.buildID=$(BUILD_ID))
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 10s
# Fuzz targets as package:Target.
FUZZ_TARGETS := ./internal/peek:FuzzClientHello ./internal/peek:FuzzParseClientHello \
	./internal/peek:FuzzHTTPHost ./internal/config:FuzzLoad

.PHONY: help build demo test lint unit e2e fuzz bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/mcpgate and the demo MCP server bin/mcpdemo
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mcpgate ./cmd/mcpgate
	$(GO) build -trimpath -o $(BIN)/mcpdemo ./cmd/mcpdemo

demo: build ## run mcpgate on loopback (https://localhost:8443/mcp) in front of a demo MCP server
	@./etc/demo/run.sh $(BIN)

test: lint unit e2e fuzz ## everything CI runs first: vet, staticcheck, unit, integration, short fuzzing

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit: ## unit tests with the race detector
	$(GO) test -race -count=1 ./internal/... ./cmd/...

e2e: ## integration tests: the real binary, real sockets, real MCP clients and servers
	$(GO) test -count=1 -timeout 15m ./tests/...

fuzz: ## run every fuzz target for FUZZTIME (default 10s; e.g. make fuzz FUZZTIME=5m)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

bench: ## Go benchmarks of the hot paths
	$(GO) test -run='^$$' -bench=. -benchmem ./internal/...

clean: ## remove build output and demo state
	rm -rf $(BIN) dist .demo
