# Tasks for etcd-backup. `make` alone lists them.
.PHONY: help setup images demo test lint build bench
.DEFAULT_GOAL := help

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install build dependencies (apt: protoc, musl-tools; rustup components)
	bash .ci/setup.sh

images: ## Build the test rig's etcd and SeaweedFS images locally (no registry needed)
	bash tests/images/build.sh

demo: setup images ## Back up a local etcd into a local S3 server, both started here
	bash scripts/demo.sh

test: setup images ## Run every test: unit, golden files, binary, containers
	cargo test --locked

lint: setup ## rustfmt and clippy, as CI runs them
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

build: setup ## Release build of the binary
	cargo build --locked --release
