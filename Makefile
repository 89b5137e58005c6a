# Shortcuts for commands repeated during development (see README for the user-facing ones).
.PHONY: install test test-kernels lint format demo bench ci sudoku-mix sudoku-mix-v2 record record-check record8 record-paper-v2 record-trm-v2 peers

install:
	pip install -r requirements.txt

test:
	python -m pytest -q

test-kernels:  # the fused SwiGLU and token-mixing kernels on CPU, in Triton's interpreter (Triton kept out of the main env)
	python -m pip install -q --no-deps --target /tmp/hrm-ci-triton "triton==3.9.0"
	PYTHONPATH=/tmp/hrm-ci-triton TRITON_INTERPRET=1 python -m pytest -q tests/test_fused.py tests/test_token_mix.py

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .

demo:
	python demo.py

bench:
	python bench/compare.py --orig orig --shapes sudoku arc

ci:
	bash .ci/run

# results/README.md: the Sudoku-Extreme-like set from the real lists, then the paper's Sudoku-1k recipe (resumable)
# LISTS: the folder of tdoku/Kaggle lists that --mix reads (docs/datasets.md)
LISTS ?= data/raw/sudoku
sudoku-mix:
	test -d data/sudoku-mix-1k-aug-1000 || python dataset/build_sudoku_dataset.py --mix $(LISTS) --mix-version 1 --subsample-size 1000 --num-aug 1000 --output-dir data/sudoku-mix-1k-aug-1000
	python pretrain.py data_path=data/sudoku-mix-1k-aug-1000 epochs=20000 eval_interval=2000 global_batch_size=768 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 project_name=sudoku-mix run_name=r0 checkpoint_path=checkpoints/sudoku-mix/r0 resume=auto 'eval_save_outputs=[inputs,labels,logits]'

# docs/datasets.md (Sudoku mix v2): the v2 build only (the speedrun's data), from the same LISTS folder
sudoku-mix-v2:
	python dataset/build_sudoku_dataset.py --mix $(LISTS) --subsample-size 1000 --num-aug 1000 --output-dir data/sudoku-mix-v2-1k-aug-1000

# docs/speedrun.md: one record = one recipe (config/recipe/<RECIPE>.yaml) on one data version, built from
# LISTS when its folder is missing, trained for at most MINUTES from the command's start; then its table row.
# make record RECIPE=trm-sudoku DATA=v2 [RUN=name] [ARGS="eval_interval=1000"]; a RUN that exists is not overwritten.
RECIPE ?= paper-sudoku
DATA ?= v2
MINUTES ?= 25
RUN ?= $(RECIPE)-$(DATA)
ARGS ?=
TABLE_ARGS ?=
MIX_DATA_v1 = data/sudoku-mix-1k-aug-1000
MIX_DATA_v2 = data/sudoku-mix-v2-1k-aug-1000

data/sudoku-mix-1k-aug-1000 data/sudoku-mix-v2-1k-aug-1000:
	python dataset/build_sudoku_dataset.py --mix $(LISTS)$(if $(findstring v2,$@),, --mix-version 1) --subsample-size 1000 --num-aug 1000 --output-dir $@

# The checks come first (a prerequisite before the data), so a wrong name or time costs no data build.
record: record-check $(MIX_DATA_$(DATA))
	timeout --foreground -k 120 -s TERM $(MINUTES)m python pretrain.py recipe=$(RECIPE) data_path=$(MIX_DATA_$(DATA)) project_name=records run_name=$(RUN) checkpoint_path=checkpoints/records/$(RUN) $(ARGS); rc=$$?; test $$rc -eq 0 -o $$rc -eq 124
	python bench/records_table.py --minutes $(MINUTES) $(TABLE_ARGS) checkpoints/records/$(RUN)

record-check:
	$(if $(MIX_DATA_$(DATA)),,$(error DATA must be v1 or v2, got '$(DATA)'))
	@test -f config/recipe/$(RECIPE).yaml || { echo "error: no recipe $(RECIPE): config/recipe/ holds $$(ls config/recipe | sed 's/\.yaml//' | tr '\n' ' ')" >&2; exit 2; }
	@echo '$(MINUTES)' | grep -Eq '^[0-9]+(\.[0-9]+)?$$' && awk 'BEGIN { exit !($(MINUTES) > 0) }' || { echo "error: MINUTES must be a positive number of minutes (e.g. MINUTES=8), got '$(MINUTES)'" >&2; exit 2; }
	@test ! -e checkpoints/records/$(RUN)/metrics.jsonl || { echo "error: checkpoints/records/$(RUN) holds a run already (a record starts from nothing); give RUN=<new name> or remove that folder" >&2; exit 2; }

# The figure one 10-minute command on one GPU can measure: best test exact within 8 minutes and the time to 10/20/40/55%
# (docs/speedrun.md); data build included when the folder is missing.
record8:
	$(MAKE) record MINUTES=8 RUN=$(if $(filter command line,$(origin RUN)),$(RUN),$(RECIPE)-$(DATA)-8min) TABLE_ARGS="--thresholds 0.1,0.2,0.4,0.55"

record-paper-v2:
	$(MAKE) record RECIPE=paper-sudoku DATA=v2

record-trm-v2:
	$(MAKE) record RECIPE=trm-sudoku DATA=v2

# The peers' own code (docs/speedrun.md), same data and time limit: ORIG and TRM are plain git checkouts
ORIG ?= orig
TRM ?= trm-orig
peers: $(MIX_DATA_$(DATA))
	python bench/peers.py --data $(MIX_DATA_$(DATA)) --orig $(ORIG) --trm $(TRM) --minutes $(MINUTES) --out results/peers-$(DATA) $(ARGS)
	python bench/records_table.py --minutes $(MINUTES) results/peers-$(DATA)/hrm-original results/peers-$(DATA)/trm-original
