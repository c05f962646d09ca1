"""The command line: help, errors, the demo end to end in a short mode, and its real accuracy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_mha as tm
from tinygrad_mha import cli, demo

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tinygrad_mha", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_the_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("demo", "gradcheck", "exercises", "bench", "plots"):
        assert re.search(rf"^\s+{command}\b", proc.stdout, flags=re.M), f"{command} missing from --help"
    demo_help = run_cli("demo", "--help").stdout
    for option in ("--task", "--steps", "--seed", "--device", "--out"):
        assert option in demo_help


def test_unknown_task_and_bad_device_exit_2_with_a_message():
    proc = run_cli("demo", "--task", "juggle")
    assert proc.returncode == 2
    assert "invalid choice: 'juggle'" in proc.stderr and "reverse" in proc.stderr
    proc = run_cli("demo", "--device", "tpu")
    assert proc.returncode == 2
    assert "invalid choice: 'tpu'" in proc.stderr and "cuda" in proc.stderr
    proc = run_cli("demo", "--steps", "0")
    assert proc.returncode == 2 and "must be a positive integer" in proc.stderr


@pytest.mark.skipif(tm.cuda_available(), reason="a GPU is present, so cuda is a good device here")
def test_cuda_without_cupy_exits_2_before_any_work(capsys):
    assert cli.main(["demo", "--device", "cuda", "--no-plots", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "CuPy" in captured.err and captured.out == ""


def test_demo_end_to_end_short_mode(tmp_path):
    proc = run_cli("demo", "--steps", "150", "--out", str(tmp_path), "--target", "0.5", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"accuracy on 2000 held-out sequences: \d+\.\d+% of digits", out)
    assert "gradcheck: tiny float64 copy of the architecture" in out and "FAILED" not in out
    for name in ("loss_reverse.png", "attention_reverse.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_demo_exit_status_reflects_the_target():
    assert run_cli("demo", "--steps", "3", "--no-plots", "--quiet").returncode == 1  # 3 steps: far below 95%


def test_short_training_beats_chance_by_a_clear_margin():
    result = demo.train("reverse", steps=150, seed=0, n_train=4000, n_test=500, progress=False)
    want = result.x_test[:, ::-1]  # the task, stated independently of the demo's code
    accuracy = np.mean(result.predictions == want)
    assert accuracy > 0.6, f"reverse after 150 steps: {accuracy:.1%} of digits (chance 10%)"
    assert result.token_accuracy == accuracy


def test_sort_task_targets_and_short_training():
    x, y = demo.make_data("sort", 50, 6, np.random.default_rng(0))
    assert all(list(row_y) == sorted(row_x) for row_x, row_y in zip(x, y))
    result = demo.train("sort", steps=120, seed=0, n_train=4000, n_test=500, progress=False)
    accuracy = np.mean(result.predictions == np.sort(result.x_test, axis=1))
    assert accuracy > 0.3, f"sort after 120 steps: {accuracy:.1%} of digits (chance 10%)"


def test_same_seed_gives_bit_identical_training():
    a = demo.train("reverse", steps=15, seed=7, n_train=500, n_test=50, progress=False)
    b = demo.train("reverse", steps=15, seed=7, n_train=500, n_test=50, progress=False)
    c = demo.train("reverse", steps=15, seed=8, n_train=500, n_test=50, progress=False)
    assert a.history["loss"] == b.history["loss"]
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        assert np.array_equal(wa, wb)
    assert a.history["loss"] != c.history["loss"]


def test_exercises_forwards_to_the_grader(capsys):
    assert cli.main(["exercises", "list"]) == 0
    out = capsys.readouterr().out
    assert "sum_to" in out and "fresh stubs" in out
    proc = run_cli("exercises", "--help")
    assert proc.returncode == 0 and "init" in proc.stdout and "check" in proc.stdout


def test_bench_runs_the_scripts_with_the_extra_arguments(tmp_path, monkeypatch, capfd):
    (tmp_path / "bench_ops.py").write_text("import sys; print('ops', sys.argv[1:])\n")
    (tmp_path / "bench_mha.py").write_text("import sys; print('mha', sys.argv[1:])\n")
    monkeypatch.setattr(cli, "BENCHMARKS", tmp_path)
    assert cli.main(["bench", "--quick"]) == 0
    out = capfd.readouterr().out
    assert "ops ['--quick']" in out and "mha ['--quick']" in out
    monkeypatch.setattr(cli, "BENCHMARKS", tmp_path / "nothing")
    assert cli.main(["bench"]) == 1
    assert "bench needs a clone of the repository" in capfd.readouterr().err


def test_fit_shows_one_tqdm_bar_or_nothing(capsys):
    """progress=True: one tqdm bar on stderr, ending at total steps with the last loss;
    progress=False: no output at all."""
    import tinygrad_mha as tm

    model = tm.layers.Sequential([tm.layers.Dense(2)])
    x, y = np.ones((8, 3)), np.zeros((8, 2))
    model.fit(x, y, loss="mse", steps=5, batch_size=4, progress=True, progress_desc="train")
    err = capsys.readouterr().err
    assert "train: 100%" in err and "5/5" in err and "loss=" in err
    assert err.count("\n") <= 1  # redrawn in place, not one line per update
    model.fit(x, y, loss="mse", steps=5, batch_size=4, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_no_hand_written_progress_bar_is_left():
    import importlib.util
    assert importlib.util.find_spec("tinygrad_mha.progress") is None
