"""The quick-start demo's pieces: the builder's --min-givens option (the demo's easy puzzles)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest


def test_min_givens_option_is_checked_and_keeps_that_many_givens(tmp_path: Path) -> None:
    from dataset import build_sudoku_dataset as b
    from utils.errors import UserError

    def checked(*argv: str):
        args = b.parse_args(list(argv))
        b.check_args(args)
        return args

    assert checked("--generate", "5").min_givens == 0  # minimal puzzles, as before
    assert checked("--generate", "5", "--min-givens", "45").min_givens == 45
    for argv, words in (
        (["--min-givens", "45"], "only applies with --generate"),
        (["--generate", "5", "--min-givens", "16"], "0 (minimal puzzles) or 17-81"),
        (["--generate", "5", "--min-givens", "82"], "0 (minimal puzzles) or 17-81"),
        (["--generate", "5", "--min-givens", "45", "--min-guesses", "1"], "leave --min-givens at 0"),
        (["--mix", str(tmp_path), "--min-givens", "45"], "do not apply to --mix"),
    ):
        with pytest.raises(UserError, match=re.escape(words)):
            checked(*argv)
    assert (
        b.main(["--generate", "6", "--test-size", "3", "--min-givens", "50", "--output-dir", str(tmp_path / "d")]) == 0
    )
    for split, n in (("train", 6), ("test", 3)):
        inputs = np.load(tmp_path / "d" / split / "all__inputs.npy")
        assert inputs.shape == (n, 81) and ((inputs > 1).sum(axis=1) == 50).all()
