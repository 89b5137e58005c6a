"""One module a puzzle: parsing, solving/checking, generation and augmentation; the builders and scorers use them.

    sudoku.py      Sudoku: parser, batched solver and generator, augmentation, list readers
    sudoku_mix.py  the Sudoku-Extreme-like set assembled from the raw tdoku/Kaggle lists
    maze.py        Maze: CSV reader/writer, breadth-first search, offline generator
    arc.py         ARC: task files, augmentation, canvas placement, decoding
    dihedral.py    the 8 symmetries of the square (ARC and Maze augmentation, test-time augmentation)

None of them is needed to train on a built dataset (dataset/format.py, dataset/loader.py).
"""
