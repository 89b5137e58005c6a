"""The training engine: what `python pretrain.py` runs, and what evaluate.py, predict.py and bench/ build on.

    config.py          PretrainConfig (every key, the one home of its default) and its checks
    run_folder.py      the run's names and folder, resume=auto resolved, the config synced across ranks
    steps.py           the original's functions: train state, create_model, train_batch, evaluate, save/restore
    loop.py            a run: plan, start-up, the loop (`run`)
    tta.py             evaluation beyond the plain pass: test-time augmentation's vote
    checkpoint.py      the checkpoint file format
    run_checkpoint.py  a run's checkpoints: saved from every rank, restored, resume lookup, pruning
    weights.py         weights for evaluate.py and predict.py
    eval_config.py     the config a checkpoint is evaluated with (evaluate.py and the API)
    curriculum.py      depth_curriculum, segments_curriculum: early steps at a shallower depth, fewer segments
    search.py, hub.py  evaluate.py's verifier search; hf:// model folders through the Hub's cache
    runtime.py         device, dtype, compile, distributed; tracking.py, report.py, records.py: what a run tells
    ema.py, rng.py, signals.py, writes.py, functions.py, trm_config.py: the weight average, random streams,
    stop signals, writes that may fail, model classes by name, TRM's config files

Nothing is imported here: `import train.records` must stay light (pretrain.py imports it before torch).
"""
