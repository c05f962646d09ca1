"""The local autograder for the exercises in ``tutorials/exercises/``.

Each exercise is one file holding one or more functions that a learner implements (they start
as stubs that raise ``NotImplementedError``). The grader loads that file, calls the functions
on freshly drawn random inputs and compares what comes back with an independent reference:
central finite differences for every gradient, a NumPy formula for every forward value, and
``tm.gradcheck`` for the exercises that build Tensors. Nothing is compared with a stored
answer, so a solution cannot pass by copying numbers.

    python -m tinygrad_mha.exercises list
    python -m tinygrad_mha.exercises check softmax_backward        # your file
    python -m tinygrad_mha.exercises check --solutions all         # the reference solutions
    pytest tests/test_exercises.py -m softmax_backward              # the same, through pytest

Exit codes: 0 every graded exercise passed, 1 something failed or is not implemented yet,
2 usage error (unknown exercise, no exercise folder). A failure says which case (input
shapes and values), which output and which element is wrong, what was expected and what
came back, and how to reproduce it (``--seed``).

From Python: ``grade(name, solutions=False, directory=None, seed=None) -> Result``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import EXERCISES, Exercise, ExerciseFailure, NotImplementedYet

__all__ = ["EXERCISES", "Exercise", "ExerciseFailure", "Result", "find_directory", "grade",
           "load", "main", "names"]

PASSED, FAILED, NOT_IMPLEMENTED = "passed", "failed", "not implemented"


@dataclass(frozen=True)
class Result:
    """The outcome of grading one exercise."""

    name: str
    status: str      # "passed", "failed" or "not implemented"
    message: str     # what was checked, or what is wrong and how to reproduce it
    path: Path       # the file that was graded
    seed: int        # the seed of the random inputs (``--seed`` reproduces them)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def report(self) -> str:
        tag = {PASSED: "PASS", FAILED: "FAIL", NOT_IMPLEMENTED: "TODO"}[self.status]
        return f"[{tag}] {self.name}: {self.message}"


def names() -> list[str]:
    """Every exercise name, in the order the tutorials introduce them."""
    return list(EXERCISES)


# ---------------------------------------------------------------- finding and loading files
REPO_ROOT = Path(__file__).resolve().parents[2]


def find_directory(solutions: bool = False, start: Path | None = None) -> Path:
    """``tutorials/exercises`` (or ``tutorials/solutions``), looked up from ``start``.

    Tried in order: ``start/tutorials/<kind>``, ``start/<kind>`` (run from inside
    ``tutorials/``), ``start`` itself when it is that folder, then the repository this package
    was installed from. ``start`` defaults to the current directory.
    """
    kind = "solutions" if solutions else "exercises"
    start = Path.cwd() if start is None else Path(start)
    candidates = [start / "tutorials" / kind, start / kind, start, REPO_ROOT / "tutorials" / kind]
    for folder in candidates:
        if folder.name == kind and folder.is_dir() and any(folder.glob("*.py")):
            return folder.resolve()
    raise FileNotFoundError(
        f"cannot find tutorials/{kind}/: run this from the repository root (or from tutorials/), "
        f"or pass --dir PATH; looked in {', '.join(str(c) for c in dict.fromkeys(candidates))}")


def _check_name(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"unknown exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def load(name: str, directory: Path):
    """Import ``directory/<name>.py`` afresh (edits are picked up on every call)."""
    _check_name(name)
    path = Path(directory) / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"exercise file {path} does not exist")
    module_name = f"_tinygrad_mha_{Path(directory).name}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _learner_traceback(exc: BaseException, path: Path) -> str:
    """The frames of ``exc`` that lie in the learner's file (or the last frame, if none do)."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()] or frames[-1:]
    return "".join(traceback.format_list(mine)).rstrip()


# ---------------------------------------------------------------- grading
def _tutorials(exercise: Exercise) -> str:
    return ("tutorials " if " and " in exercise.tutorial else "tutorial ") + exercise.tutorial


def grade(name: str, solutions: bool = False, directory=None, seed: int | None = None) -> Result:
    """Grade one exercise on fresh random inputs; never raises for a wrong solution.

    ``directory`` overrides where the file is looked up; ``seed`` fixes the random inputs
    (by default a fresh seed is drawn and reported, so a failure can be reproduced).
    """
    exercise = _check_name(name)
    folder = Path(directory) if directory is not None else find_directory(solutions)
    path = (folder / f"{name}.py").resolve()
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 32))
    again = f"python -m tinygrad_mha.exercises check {name} --seed {seed}"
    if solutions:
        again += " --solutions"

    def result(status, message):
        return Result(name, status, message, path, seed)

    try:
        module = load(name, folder)
    except FileNotFoundError as exc:
        return result(FAILED, str(exc))
    except SyntaxError as exc:
        return result(FAILED, f"could not import {_shown(path)}: SyntaxError: {exc.msg} at line "
                              f"{exc.lineno}:\n    {(exc.text or '').strip()}")
    except Exception as exc:  # a crash at import time
        return result(FAILED, f"could not import {_shown(path)}: {type(exc).__name__}: {exc}\n"
                              f"{_learner_traceback(exc, path)}")
    rng = np.random.default_rng(seed)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # Overflow in a naive exp is reported as a wrong (inf/nan) value with a hint,
            # which says more than NumPy's RuntimeWarning would.
            warnings.simplefilter("ignore", RuntimeWarning)
            cases = exercise.grade(module, rng)
    except NotImplementedYet as exc:
        return result(NOT_IMPLEMENTED,
                      f"not implemented yet: open {_shown(path)} and replace the "
                      f"`raise NotImplementedError` in {exc.function}() with your code "
                      f"(its docstring states the task; {_tutorials(exercise)} explains it)")
    except ExerciseFailure as exc:
        hint = f"\n  hint: {exercise.hint}" if exercise.hint else ""
        return result(FAILED, f"{exc}{hint}\n  reproduce with: {again}")
    except Exception as exc:  # the learner's code crashed
        return result(FAILED, f"{type(exc).__name__}: {exc}\n{_learner_traceback(exc, path)}\n"
                              f"  reproduce with: {again}")
    return result(PASSED, f"{cases} cases passed (seed {seed})")


# ---------------------------------------------------------------- command line
def main(argv=None, prog: str = "python -m tinygrad_mha.exercises") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Grade the exercises in tutorials/exercises/ on fresh random inputs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the exercises, their files and tutorials")
    p = sub.add_parser("check", help="grade one or more exercises (all when none is named)")
    p.add_argument("names", nargs="*", metavar="NAME", help="exercise names, or 'all'")
    p.add_argument("--solutions", action="store_true",
                   help="grade the reference solutions in tutorials/solutions/ instead")
    p.add_argument("--seed", type=int, default=None, help="draw the same random inputs again")
    p.add_argument("--dir", type=Path, default=None, help="folder holding <name>.py files")
    args = parser.parse_args(argv)

    if args.command == "list":
        try:
            folder = _shown(find_directory(False))
        except FileNotFoundError:
            folder = "tutorials/exercises"
        width = max(len(n) for n in EXERCISES)
        for exercise in EXERCISES.values():
            print(f"{exercise.name:<{width}}  {_tutorials(exercise):<20}  {exercise.summary}")
        print(f"\nfiles: {folder}/<name>.py; grade one with: {prog} check <name>")
        return 0

    chosen = list(EXERCISES) if not args.names or args.names == ["all"] else args.names
    unknown = [n for n in chosen if n not in EXERCISES]
    if unknown:
        print(f"error: unknown exercise(s) {', '.join(unknown)}; see `{prog} list`", file=sys.stderr)
        return 2
    try:
        folder = args.dir if args.dir is not None else find_directory(args.solutions)
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--dir {folder} is not a folder")
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = [grade(n, args.solutions, folder, args.seed) for n in chosen]
    for r in results:
        print(r.report())
    if len(results) > 1:
        print(f"{sum(r.passed for r in results)} of {len(results)} exercises passed")
    return 0 if all(r.passed for r in results) else 1
