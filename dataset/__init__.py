"""Datasets: the format training reads, its loader, and the commands that build, score and show them.

    format.py      the on-disk format (dataset.json, the .npy arrays, identifiers.json): written by the builders
    loader.py      PuzzleDataset, what pretrain.py/evaluate.py read batches from
    transforms.py  the symmetry transforms (Sudoku's family, Maze's 8) as gathers: online augmentation, TTA
    builder.py     what the build commands share: atomic output, progress, counts, Hugging Face downloads
    puzzles/       per puzzle: Sudoku (and the Sudoku-Extreme-like mix), Maze, ARC, the dihedral symmetries
    verify.py      whether a Sudoku or Maze answer is valid, whether or not it is the label
    viewer/        the viewer's modules

Commands, run from the repo root as `python dataset/<name>.py`: build_sudoku_dataset, build_maze_dataset,
build_arc_dataset; score_arc and score_sudoku (saved predictions); view (PNG/HTML pages).
"""
