# scanpay — build, test and package. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
PKGS := ./...
FUZZTIME ?= 30s
# Debian-style version from git: a vX.Y.Z tag gives X.Y.Z; otherwise
# 0.0.0+git<commits>.<hash>.
VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//; s/-\([0-9]*\)-g/+git\1./'); \
  [ -n "$$v" ] && echo "$$v" || echo "0.0.0+git$$(git rev-list --count HEAD 2>/dev/null || echo 0).$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin
CMDS := scanpay iotpaysim fakescanner fakeecr

.PHONY: help demo demo-fleet build test test-fleet bench-fleet vet fuzz cross test-arm test-vm test-install dist check-dist check-systemd crash bench bench-e2e sim sim-mutants check-mutants clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## run the demo: a lane against the built-in gateway simulator (no hardware needed)
	$(GO) run ./cmd/scanpay demo

demo-fleet: ## three lanes, head office's embedded NATS JetStream and PostgreSQL (if installed), the fleet report
	$(GO) run ./cmd/scanpay demo-fleet

# The lane's scanpay is built with -tags nohq (no NATS server, no
# PostgreSQL client: half the binary a checkout Pi pages in); scanpay-hq is
# the same program with head office in.
build: ## build the commands into bin/ (scanpay for lanes, scanpay-hq for head office)
	@mkdir -p $(BIN)
	@for c in $(CMDS); do [ -d cmd/$$c ] || continue; tags=; [ $$c = scanpay ] && tags=nohq; \
	  CGO_ENABLED=0 $(GO) build -trimpath -tags "$$tags" -ldflags '$(LDFLAGS)' -o $(BIN)/$$c ./cmd/$$c || exit 1; done
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/scanpay-hq ./cmd/scanpay

vet: ## go vet (the lane's nohq build too) and a gofmt check
	$(GO) vet $(PKGS)
	$(GO) vet -tags nohq ./cmd/scanpay
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: vet ## vet, then every test with the race detector (fuzz seeds included)
	$(GO) test -race -count=1 $(PKGS)

# The fleet scenario at full size: 20 lanes × 500 sales, a NATS node killed
# and restarted, head office SIGKILLed, a lane's link cut (make test runs it
# at 4 × 60 under the race detector; this size takes about 3.5 min with -race
# on 2 cores, so it runs without).
FLEET_LANES ?= 20
FLEET_SALES ?= 500
test-fleet: ## the fleet scenario at full size (20 lanes × 500 sales) against real JetStream and PostgreSQL
	@set -o pipefail; SCANPAY_FLEET_LANES=$(FLEET_LANES) SCANPAY_FLEET_SALES=$(FLEET_SALES) \
	  $(GO) test -count=1 -timeout 20m -run '^TestFleetScenario$$' -v ./cmd/scanpay 2>&1 | grep -v 'logger.go:'

bench-fleet: ## fleet figures: events/s into PostgreSQL, lane-to-HQ lag, the outbox's cost per sale
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./payment/journal
	$(GO) test -run '^$$' -bench . ./hq

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; done; done

cross: ## cross-build every command for linux/amd64, arm64, arm v7 and v6 (CGO off)
	@set -e; for target in amd64: arm64: arm:7 arm:6; do \
	  arch=$${target%%:*}; arm=$${target##*:}; dir=$(BIN)/linux-$$arch$${arm:+v$$arm}; mkdir -p $$dir; \
	  for c in $(CMDS); do [ -d cmd/$$c ] || continue; tags=; [ $$c = scanpay ] && tags=nohq; \
	    CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -tags "$$tags" -ldflags '$(LDFLAGS)' -o $$dir/$$c ./cmd/$$c; done; \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$dir/scanpay-hq ./cmd/scanpay; \
	  echo "built $$dir"; done

ARM_PKGS ?= ./device/... ./scanner/... ./keypad/... ./payment/iotpay/...

test-arm: ## package tests built for linux/arm (v7, 16-byte input_event) and arm64, run under qemu-user-static
	@command -v qemu-arm-static >/dev/null || { echo "test-arm needs qemu-user-static (apt-get install qemu-user-static)"; exit 1; }
	CGO_ENABLED=0 GOARCH=arm GOARM=7 $(GO) test -count=1 -exec qemu-arm-static $(ARM_PKGS)
	CGO_ENABLED=0 GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64-static $(ARM_PKGS)

test-vm: ## boot a Debian kernel in QEMU: uinput scanner, daemon with a uinput keypad, Concert over 7E1 UARTs, power cut
	deploy/vm/run.sh scanner
	deploy/vm/run.sh daemon
	deploy/vm/run.sh uart
	deploy/vm/run.sh powercut

test-install: dist ## the .deb under systemd on Debian 12 in QEMU: amd64 and arm64 scenarios, raspi3b smoke (root)
	deploy/vm/install/run.sh

dist: ## cross-build binaries (dist/linux-*) and .deb packages for amd64, arm64 and armhf
	@rm -rf dist && mkdir -p dist
	@$(MAKE) --no-print-directory cross BIN=dist
	deploy/deb/build.sh dist $(VERSION)
	@ls -l dist/*/scanpay dist/*.deb

check-dist: dist ## inspect the packages, install one into a scratch root, run the arm builds under qemu
	deploy/deb/check.sh dist

check-systemd: ## systemd-analyze verify and security (exposure at most 1.5) of both units
	@set -o pipefail; tmp=$$(mktemp -d); rc=0; for u in scanpay scanpay-hq; do \
	  sed -E "s|/usr/bin/scanpay(-hq)?|/bin/true|" systemd/$$u.service > $$tmp/$$u.service; \
	  systemd-analyze verify $$tmp/$$u.service && \
	  systemd-analyze security --offline=true --threshold=15 $$tmp/$$u.service | tail -n 1 || rc=1; done; rm -rf $$tmp; exit $$rc

crash: ## the long crash test: SCANPAY_CRASH_SALES (default 2000) sales under random SIGKILLs
	SCANPAY_CRASH_SALES=$${SCANPAY_CRASH_SALES:-2000} $(GO) test -race -count=1 -timeout 60m -run '^TestCrashRecovery$$' -v ./payment | grep -E 'crash test|checked|PASS|FAIL|ok'

SEEDS ?= 2000
FIRST ?= 1
sim: ## the whole-lane simulation: SEEDS seeds (default 2000) from FIRST; SCANPAY_SIM_SEED=N replays one with its log
	@if [ -n "$$SCANPAY_SIM_SEED" ]; then \
	  $(GO) test -count=1 -run '^TestLaneSim$$' -v ./payment/lanesim; \
	else \
	  set -o pipefail; SCANPAY_SIM_SEEDS=$(SEEDS) SCANPAY_SIM_FIRST=$(FIRST) $(GO) test -count=1 -timeout 90m -run '^TestLaneSim$$' -v ./payment/lanesim \
	    | grep -E '^(lanesim|FAIL|panic)|^\s+(--- FAIL|\S+_test\.go:[0-9]+)'; \
	fi

bench-e2e: ## the end-to-end benchmark: the real binary on ptys vs a floor program (see README); a few minutes
	SCANPAY_BENCH_E2E=1 $(GO) test -count=1 -timeout 60m -run '^TestBenchE2E$$' -v ./cmd/scanpay | grep -vE '^(=== RUN|--- PASS|PASS|ok)'

check-mutants: ## each sim mutant (payment/lanesim/mutants) still applies to the code
	@for p in payment/lanesim/mutants/*.patch; do git apply --check "$$p" || { echo "mutant $$p no longer applies: regenerate it"; exit 1; }; done; echo "every mutant applies"

sim-mutants: ## put back each bug the simulation must find (payment/lanesim/mutants) and show the seed that finds it
	payment/lanesim/mutants.sh $(or $(MUTANT_SEEDS),5000)

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean: ## remove build output
	rm -rf $(BIN) dist
