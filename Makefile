# Shortcuts for commands repeated during development (see README for the user-facing ones).
.PHONY: install test lint format demo bench ci

install:
	pip install -r requirements.txt

test:
	python -m pytest -q

lint:
	ruff check . && ruff format --check .

format:
	ruff check --fix . && ruff format .

demo:
	python dataset/build_sudoku_dataset.py --generate 200 --test-size 100 --num-aug 15 --output-dir data/sudoku-demo --overwrite
	python pretrain.py data_path=data/sudoku-demo epochs=400 eval_interval=100 global_batch_size=128 lr=1e-3 puzzle_emb_lr=1e-3 lr_warmup_steps=20 arch.hidden_size=128 arch.num_heads=4 arch.H_layers=2 arch.L_layers=2 arch.halt_max_steps=4

bench:
	python bench/compare.py --orig orig --shapes sudoku arc

ci:
	bash .ci/run
