# Tasks for etcd-backup. `make` alone lists them.
.PHONY: help setup images demo test cargo-test image-test checks lint build bench pitr-bench latency gentle upload spool restart weights fuzz manifests arm64
.DEFAULT_GOAL := help

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install build dependencies (apt: protoc, musl-tools; rustup components; promtool and Pushgateway binaries)
	bash .ci/setup.sh
	bash scripts/tools.sh >/dev/null

images: ## Build the test rig's etcd and SeaweedFS images locally (no registry needed)
	bash tests/images/build.sh

demo: setup images ## Back up a local etcd into a local S3 server, both started here
	bash scripts/demo.sh

test: checks image-test cargo-test ## Every test: cargo tests, the runtime image in Docker, manifests and packaging checks

cargo-test: setup images ## Unit, golden-file, binary and container tests
	cargo test --locked

image-test: setup images ## Build the release image from the Containerfile (local base stand-ins) and run backup/list/restore/verify from it
	bash tests/image.sh

checks: ## Kustomize overlays render and validate, install.yaml is fresh, Containerfile lints, flake parses
	bash .ci/checks.sh

manifests: ## Re-render manifests/install.yaml
	bash scripts/render-manifests.sh

lint: setup ## rustfmt and clippy, as CI runs them
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

build: setup ## Release build of the binary
	cargo build --locked --release

arm64: setup ## Build the aarch64 static binary (zig) and run --help and verify of the golden files under qemu
	bash tests/arm64.sh

bench: setup images ## etcd-backup vs etcdctl/etcdutl on a 1 GiB etcd (bench/backup.sh)
	bash bench/backup.sh

pitr-bench: setup images ## restore --to-revision of a 1 GiB base plus an hour of writes (bench/pitr.sh)
	bash bench/pitr.sh

latency: setup images ## etcd's write latency during backups, and what ETCD_SNAPSHOT_RATE buys back (bench/latency.sh)
	bash bench/latency.sh

gentle: setup images ## how gentle a backup is with etcd: adaptive pacing, windows, the probe, gctrace (bench/gentle.sh)
	bash bench/gentle.sh

upload: setup images ## the backup through a 40 ms link at 200 Mbit/s per connection, per upload concurrency (bench/upload.sh)
	bash bench/upload.sh

restart: setup images ## seconds a stream's crash costs, restarted in the same pod against a new one (bench/restart.sh)
	bash bench/restart.sh

spool: setup images ## etcd's latency with the backup's spool on etcd's disk or on tmpfs (bench/spool.sh)
	bash bench/spool.sh

weights: setup images ## etcd's latency with the backup in a container at the CronJob's CPU shares, 1 CPU's, and BACKUP_NICE=0 (bench/weights.sh)
	bash bench/weights.sh

fuzz: ## Fuzz the snapshot checks, structure-aware, for 10 minutes (fuzz/run.sh)
	bash fuzz/run.sh
