# Two set-up commands: `make demo` and `make test` (both create .venv and install everything, offline-safe).
VENV    ?= .venv
PY      := $(VENV)/bin/python
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.cjkrag-installed
# torch goes in first and pinned: 2.13.0 is the CPU build here; anything else pulls GBs of CUDA wheels.
# GPU users: install the CUDA torch of their choice first (see README), then `pip install -e '.[all]'`.
TORCH   ?= torch==2.13.0
EXTRAS  ?= ray,gpu,milvus,qdrant,weaviate,elasticsearch,service,eval,formats,optimize,dev
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-slow test-all lint typecheck bench bench-query bench-quality clean system-deps

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install -q --upgrade pip "setuptools>=69,<81" wheel
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/cjkrag models prepare
	touch $(STAMP)

install: $(STAMP)

# Optional system packages (Debian, as root): Tesseract with Chinese/Japanese (and vertical Japanese)/Korean data, the OCR engine
# used when present (without it OCR falls back to RapidOCR from PyPI, which reads Chinese only).
system-deps:
	apt-get update -qq
	apt-get install -y -qq tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-jpn tesseract-ocr-jpn-vert tesseract-ocr-kor

demo: install
	$(BIN)/cjkrag ingest samples/corpus.jsonl samples/docs --acl group:staff
	$(BIN)/cjkrag query "如何重置密码" --principal group:support --principal group:staff --top-k 5
	$(BIN)/cjkrag query "パスワードを忘れた場合はどうすればいいですか" --principal group:support --principal group:staff --top-k 5

test: install lint
	$(BIN)/pytest -q -m "not slow and not integration"

test-slow: install
	$(BIN)/pytest -q -m "slow"

test-all: install lint
	$(BIN)/pytest -q -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(PY) tools/typecheck.py

bench: install
	$(PY) benchmarks/chunking.py
	$(PY) benchmarks/analyzer.py

# Query latency vs LangChain, service throughput, the OpenMP policy (README "Query speed"); QUICK=1: smoke run
bench-query: install
	$(PY) -m pip install -e '.[bench]' && $(PY) -m pip install --no-deps 'langchain-huggingface>=1.0'
	$(PY) benchmarks/thread_policy.py $(if $(QUICK),--quick)
	$(PY) benchmarks/query.py $(if $(QUICK),--quick)
	$(PY) benchmarks/service.py $(if $(QUICK),--quick)

# Retrieval quality on every shared set (slow on a CPU: each corpus is embedded once, vectors cached per text):
# keyword / dense / hybrid through the engine, every fusion, the bigram reference and the title variants
# (benchmarks/acceptance.py), then the tables and benchmarks/results/{eval,acceptance}.json.
BEIR_OUT ?= cjkrag-data/beir
QUALITY_SETS ?= cmrc2018-passage cmrc2018-article jaquad-passage jaquad-article xquad-zh-passage xquad-zh-article
PAIR_SETS ?= tatoeba-cmn-eng tatoeba-jpn-eng tatoeba-kor-eng lcqmc bq pawsx-zh
bench-quality: install
	$(PY) benchmarks/make_beir.py $(BEIR_OUT)
	$(PY) benchmarks/acceptance.py $(addprefix ../shared/data/beir/,$(QUALITY_SETS)) $(addprefix $(BEIR_OUT)/,$(PAIR_SETS)) --report
	$(PY) benchmarks/analyzer.py --quality --no-speed --bm25 1.5:0.75,1.2:0.75 --json $(BEIR_OUT)/analyzer.json

clean:
	rm -rf $(VENV) .typecheck .pytest_cache .mypy_cache .hypothesis build *.egg-info
