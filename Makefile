# tunwall — see README.md. `make demo` shows it working, `make test` proves it.
GO      ?= go
BIN     := bin
UNIT    := ./policy/... ./tun/... ./netstack/... ./internal/... ./cmd/...
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)
STATICCHECK := v0.8.2

.PHONY: build test unit e2e e2e-race bench ab demo lint staticcheck fuzz clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/tunwall ./cmd/tunwall
	$(GO) build -o $(BIN)/twlab ./e2e/cmd/twlab

# Unit tests (with the race detector) and the namespace e2e suite. The e2e
# suite needs root; it skips elsewhere, but fails under CI=true.
test: lint unit e2e

unit:
	$(GO) test -race -count=1 $(UNIT)

e2e:
	$(GO) test -count=1 -v ./e2e/...

# The same suite against race-detector builds of tunwall and twlab: it
# fails on any race report. About 2.5 times as long as make e2e.
e2e-race:
	TUNWALL_E2E_RACE=1 $(GO) test -count=1 -v ./e2e/...

# The kernel path, tunwall, and refgw (the reference: a tun2socks-style
# gVisor gateway) in one run.
bench: build
	$(GO) build -o $(BIN)/refgw ./e2e/cmd/refgw
	$(BIN)/twlab bench $(BIN)/tunwall bench.json $(BIN)/refgw

# Two tunwall builds in alternating rounds: make ab A=old-binary [B=bin/tunwall] [ROUNDS=4]
B      ?= $(BIN)/tunwall
ROUNDS ?= 4
ab: build
	@test -n "$(A)" || { echo "usage: make ab A=old-tunwall-binary [B=$(BIN)/tunwall] [ROUNDS=4]"; exit 2; }
	$(BIN)/twlab ab $(A) $(B) $(ROUNDS)

demo: build
	$(BIN)/twlab demo $(BIN)/tunwall

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	@# On darwin and windows, code only Linux uses is left unused by design (U1000).
	@if command -v staticcheck >/dev/null; then set -e; echo staticcheck ./...; staticcheck ./...; \
		for os in darwin windows; do echo "GOOS=$$os staticcheck ./..."; GOOS=$$os staticcheck -checks inherit,-U1000 ./...; done; \
	elif [ "$$CI" = true ]; then echo "staticcheck not found (.ci/run installs it)"; exit 1; \
	else echo "staticcheck not installed, skipped: go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK)"; fi

# The pinned staticcheck, into .ci/bin (.ci/run puts that on PATH).
staticcheck:
	GOBIN=$(CURDIR)/.ci/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK)

fuzz:
	$(GO) test ./policy -run '^$$' -fuzz FuzzParse -fuzztime 60s
	$(GO) test ./policy -run '^$$' -fuzz FuzzList -fuzztime 30s
	$(GO) test ./policy -run '^$$' -fuzz FuzzShapes -fuzztime 30s
	$(GO) test ./internal/names -run '^$$' -fuzz '^FuzzDNS$$' -fuzztime 30s
	$(GO) test ./internal/names -run '^$$' -fuzz '^FuzzServerName$$' -fuzztime 30s
	$(GO) test ./internal/names -run '^$$' -fuzz '^FuzzHTTPHost$$' -fuzztime 30s
	$(GO) test ./internal/control -run '^$$' -fuzz FuzzHandler -fuzztime 30s
	$(GO) test ./netstack -run '^$$' -fuzz FuzzInspect -fuzztime 30s
	$(GO) test ./netstack -run '^$$' -fuzz FuzzGateway -fuzztime 60s

clean:
	rm -rf $(BIN) bench.json
