# Set-up, demo and tests. Every target installs what it needs first
# (scripts/install-deps.sh lists the packages and why).

CARGO ?= cargo

.PHONY: all deps build guest demo test test-host test-nested bench clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --bins --release

# The guest fixture: Debian's cloud kernel and a busybox initramfs.
guest: deps
	tests/guest/build.sh

# Boots a default VM under vmd and shows its console.
demo: build guest
	./scripts/demo.sh

# Every test: unit tests, tiny guests and vmd on this machine's KVM, then
# the end-to-end tests with a real Linux guest (nested when this machine
# has no VMX/SVM).
test: test-host test-nested

test-host: deps guest
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

test-nested: build guest
	./tests/nested/run-e2e.sh

bench: build guest
	./bench/run.sh

clean:
	$(CARGO) clean
	rm -rf build
