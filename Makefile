# tapmap top-level Makefile: drives CMake. `make test` and `make demo` each work on a
# fresh Debian 12 machine by themselves (they install what they need first).

PREFIX   ?= /usr/local
DESTDIR  ?=
BUILD    ?= build
ASAN_BUILD ?= build-asan
JOBS     ?= $(shell nproc)
CMAKE_FLAGS ?=

# Exactly what build, tests, demo, benchmarks and the Xen lab need (Debian 12 package
# names; the last line is the lab's: real Xen 4.17 and a Debian kernel under QEMU).
DEPS := build-essential cmake pkg-config clang clang-format libclang-rt-14-dev \
        libxen-dev xen-utils-4.17 xenstore-utils \
        capnproto libcapnp-dev catch2 libboost-dev libboost-system-dev \
        liblmdb-dev lmdb-utils liburing-dev libssl-dev nlohmann-json3-dev \
        qemu-utils qemu-block-extra libnbd-bin python3-libnbd nbdkit fio \
        librados-dev libradospp-dev ceph-mon ceph-osd ceph-common \
        python3 systemd util-linux procps iproute2 \
        qemu-system-x86 xen-hypervisor-4.17-amd64 linux-image-amd64 busybox-static \
        debootstrap cpio e2fsprogs xz-utils

.PHONY: all deps configure test unit-test asan asan-all demo demo-ceph bench install clean format fuzz lab

all: configure
	cmake --build $(BUILD) -j$(JOBS)

configure: $(BUILD)/CMakeCache.txt
$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTAPMAP_SANITIZE=ON $(CMAKE_FLAGS)

# Installs missing packages only; a no-op (no apt) when all are present.
deps:
	@missing=""; for p in $(DEPS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "make deps: all packages present"; fi

# The sanitizer build: the unit tests only (what `make test` runs under ASan+UBSan);
# `make asan-all` builds every target there.
asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake -S . -B $(ASAN_BUILD) > /dev/null  # an older tree may not know the target yet
	cmake --build $(ASAN_BUILD) -j$(JOBS) --target unit_tests

asan-all: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS)

# Every test: unit + integration on the optimised build, unit again under ASan+UBSan.
test: deps
	$(MAKE) all
	$(MAKE) asan
	tests/run_all.sh $(BUILD) $(ASAN_BUILD)

unit-test: all
	ctest --test-dir $(BUILD) -L unit --output-on-failure -j$(JOBS)

# Quiet: the build's output goes to $(BUILD)/demo-build.log and is shown only if the
# build fails; the demo prints its steps, its table and one closing line.
demo: deps
	@mkdir -p $(BUILD)
	@echo "== building tapmap (log: $(BUILD)/demo-build.log)"
	@$(MAKE) --no-print-directory all > $(BUILD)/demo-build.log 2>&1 || \
	  { tail -n 60 $(BUILD)/demo-build.log; echo "make demo: the build failed (whole log: $(BUILD)/demo-build.log)" >&2; exit 1; }
	@tests/demo/run_demo.sh $(BUILD)

# The demo on a RADOS pool: the same boot storm, on a throw-away one-node Ceph cluster
# the demo starts and stops (make demo needs no Ceph).
demo-ceph: deps
	@mkdir -p $(BUILD)
	@echo "== building tapmap (log: $(BUILD)/demo-build.log)"
	@$(MAKE) --no-print-directory all > $(BUILD)/demo-build.log 2>&1 || \
	  { tail -n 60 $(BUILD)/demo-build.log; echo "make demo-ceph: the build failed (whole log: $(BUILD)/demo-build.log)" >&2; exit 1; }
	@TAPMAP_DEMO_POOL=rados tests/demo/run_demo.sh $(BUILD)

bench: deps
	$(MAKE) all
	bench/run_all.sh $(BUILD)

fuzz: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS) --target fuzz_targets
	tests/fuzz/run_fuzz.sh $(ASAN_BUILD) 600

lab: deps
	$(MAKE) all
	tests/lab/run_lab.sh $(BUILD)

install: all
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

format:
	find common mapserver tapdisk-map xenstore-tools tests bench include \
	  \( -name '*.cc' -o -name '*.h' \) -print0 | xargs -0 clang-format -i
