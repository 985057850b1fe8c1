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
	./internal/peek:FuzzHTTPHost ./internal/config:FuzzLoad \
	./internal/quicroute:FuzzParseInitial ./internal/quicroute:FuzzAssembler ./internal/quicroute:FuzzRoute \
	./internal/reqpath:FuzzPath ./internal/reqpath:FuzzQuery ./internal/proxy:FuzzUpstreamResponse \
	./internal/proxy:FuzzDirectPath

.PHONY: help build demo test lint unit integration integration-deps pg-deps e2e fuzz bench bench-quick bench-scale clean package package-deps package-test package-golden-update systemtest systemtest-clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/mcpgate and the demo MCP server bin/mcpdemo
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mcpgate ./cmd/mcpgate
	$(GO) build -trimpath -o $(BIN)/mcpdemo ./cmd/mcpdemo

demo: build ## run mcpgate on loopback (https://localhost:8443/mcp) in front of a demo MCP server
	@./etc/demo/run.sh $(BIN)

test: lint unit integration fuzz ## vet, staticcheck, unit and integration tests, short fuzzing

lint: ## gofmt, go mod tidy -diff, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit: pg-deps ## unit tests with the race detector (the PostgreSQL store against a real PostgreSQL); every benchmark once, so none rots
	$(GO) test -race -count=1 ./internal/... ./cmd/...
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./internal/... ./bench/...

# The integration tests use these Debian packages when present (h2load for
# the reload soak that Go's retrying client cannot do); CI must have them.
INTEGRATION_APT := nghttp2-client

integration: integration-deps pg-deps ## the real binary, real sockets, real Go MCP SDK clients and servers, a fake GitHub, h2load, PostgreSQL for two nodes
	$(GO) test -count=1 -timeout 15m ./tests/...

integration-deps: ## install INTEGRATION_APT (h2load) if missing and root; otherwise say which tests will skip
	@missing=; for p in $(INTEGRATION_APT); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	  if [ -z "$$missing" ]; then exit 0; fi; \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "missing Debian packages:$$missing (sudo make integration-deps); TestReloadH2load will be skipped"; fi

# The PostgreSQL store's tests start a throwaway server from Debian's
# postgresql package (internal/store/postgres/pgtest: initdb in a temporary
# directory, an unprivileged user, a free loopback port). Without it they
# skip, except under CI=true, where they fail.
pg-deps: ## install Debian's postgresql package for the store tests when missing (root; others get a hint)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "pg-deps: PostgreSQL is missing: install Debian's postgresql package (sudo apt-get install --no-install-recommends postgresql) or run make as root; its tests skip meanwhile (and fail under CI=true)" >&2; \
	  else \
	    echo "pg-deps: installing Debian's postgresql package"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	  fi; \
	fi

# The browser of make e2e: Debian's chromium package, installed when missing.
CHROMIUM ?= /usr/bin/chromium

e2e: ## the TypeScript MCP SDK client through the whole OAuth flow (Node >= 20.18.1, npm), and the login flow in headless Chromium (installed as root if missing)
	@if [ ! -x '$(CHROMIUM)' ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "e2e: $(CHROMIUM) is missing: install Debian's chromium package (sudo apt-get install --no-install-recommends chromium), run make e2e as root, or set CHROMIUM=/path/to/chromium" >&2; exit 1; fi; \
	  echo "e2e: installing Debian's chromium package"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	fi
	npm ci --prefix tests/ts --prefer-offline --no-audit --no-fund --loglevel=error
	npm run --prefix tests/ts --silent build
	MCPGATE_TS_E2E=1 $(GO) test -count=1 -v -timeout 5m -run '^TestTypeScriptSDK$$' ./tests/tsdriver/
	MCPGATE_BROWSER_E2E=1 MCPGATE_CHROMIUM='$(CHROMIUM)' $(GO) test -count=1 -v -timeout 5m ./tests/browser/

fuzz: ## run every fuzz target for FUZZTIME (default 10s; e.g. make fuzz FUZZTIME=5m)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; \
	  for try in 1 2 3; do \
	    echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
	    if $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $$pkg > .fuzz.log 2>&1; then \
	      tail -n 1 .fuzz.log; break; fi; \
	    cat .fuzz.log; \
	    if [ $$try -lt 3 ] && grep -q 'context deadline exceeded' .fuzz.log && ! grep -q 'Failing input written' .fuzz.log; then \
	      echo "(not a finding: Go's fuzz coordinator can report its own -fuzztime deadline as a failure when it races the workers' cancellation; once more)"; continue; fi; \
	    rm -f .fuzz.log; exit 1; \
	  done; \
	done; rm -f .fuzz.log

bench: integration-deps ## mcpgate vs nginx, Caddy and the bare backend, plus the Go micro-benchmarks: bench/results/<date>.md (< 15 min; installs its Debian packages)
	@GO=$(GO) bench/run.sh full
	@echo "== reload soak: 100 reloads under HTTP/1.1, HTTP/2 and SSE load (zero failed requests)"
	MCPGATE_RELOAD_SOAK=long $(GO) test -count=1 -v -timeout 10m -run '^TestReloadUnderLoad$$' ./tests/e2e/
	@echo "== h2load reload soak: 30 reloads idle, 30 beside busy CPUs (no stream discarded by a drain)"
	MCPGATE_RELOAD_SOAK=long $(GO) test -count=1 -v -timeout 15m -run '^TestReloadH2load$$' ./tests/e2e/

bench-quick: ## a subset of make bench, one run per figure (< 3 min): bench/results/<date>-quick.md
	@GO=$(GO) bench/run.sh quick

bench-scale: ## only make bench's 500-proxy row (HTTP/3 on; start, PSS, reload of all): bench/results/<date>-scale.md
	@GO=$(GO) bench/run.sh scale

clean: ## remove build output and demo state
	rm -rf $(BIN) dist .demo

# ---------------------------------------------------------------------------
# Packages and the system test (issue 5): .deb/.rpm from nfpm.yaml, golden
# package metadata, and a Debian 12 booted with systemd-nspawn.

NFPM        := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
DIST        ?= dist
# A version deb and rpm accept, from git (packaging/version.sh).
PKG_VERSION ?= $(shell packaging/version.sh)
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
PKG_LDFLAGS  = -s -w -X $(PKG)/internal/buildinfo.version=$(PKG_VERSION) $(if $(BUILD_ID),-X $(PKG)/internal/buildinfo.buildID=$(BUILD_ID))
# The system test and package tests install these Debian packages if missing.
SYSTEMTEST_APT := systemd-container debootstrap rpm jq man-db

package: ## build dist/mcpgate_VERSION_ARCH.deb and .rpm (VERSION from git; PKG_VERSION=, BUILD_ID= to override)
	@set -euo pipefail; v='$(PKG_VERSION)'; a='$(PKG_ARCH)'; \
	  case "$$a" in amd64) ra=x86_64;; arm64) ra=aarch64;; 386) ra=i386;; *) ra=$$a;; esac; \
	  work=$(DIST)/.build/$$v; rm -rf "$$work"; mkdir -p "$$work"; \
	  echo "package: mcpgate $$v ($$a) build id: $(or $(BUILD_ID),from the Go build id)"; \
	  export SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)}; \
	  CGO_ENABLED=0 GOARCH=$$a $(GO) build -trimpath -ldflags '$(PKG_LDFLAGS)' -o "$$work/mcpgate" ./cmd/mcpgate; \
	  packaging/gen-docs.sh "$$work/mcpgate" "$$work/docs"; \
	  export PKG_VERSION="$$v" PKG_ARCH="$$a" PKG_BIN="$$work/mcpgate" PKG_DOCS="$$work/docs"; \
	  $(GO) run $(NFPM) package --config nfpm.yaml --packager deb --target "$(DIST)/mcpgate_$${v}_$${a}.deb"; \
	  $(GO) run $(NFPM) package --config nfpm.yaml --packager rpm --target "$(DIST)/mcpgate_$${v}_$${ra}.rpm"; \
	  rm -rf "$$work"; rmdir $(DIST)/.build 2>/dev/null || true

package-deps: ## install the Debian packages the package and system tests need (root)
	@missing=; for p in $(SYSTEMTEST_APT); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi

package-test: package-deps ## golden package contents and metadata (deb and rpm), systemd-analyze verify/security of the units
	MCPGATE_PACKAGE_TEST=1 $(GO) test -count=1 -v -timeout 10m ./tests/system/

package-golden-update: package-deps ## regenerate tests/system/testdata/*.golden after a packaging change (review the diff)
	MCPGATE_PACKAGE_TEST=1 $(GO) test -count=1 -timeout 10m ./tests/system/ -run Golden -update

systemtest: package-deps ## boot Debian 12 with systemd-nspawn: install the .deb, reload, upgrade under load, purge (root)
	@tests/system/systemtest.sh

systemtest-clean: ## remove the cached Debian root of the system test (.cache/systemtest)
	rm -rf .cache/systemtest
