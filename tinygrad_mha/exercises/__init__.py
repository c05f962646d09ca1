"""The exercises and their local autograder: ``python -m tinygrad_mha.exercises``.

Each exercise is one file holding one or more functions that a learner implements (they start
as stubs that raise ``NotImplementedError``). The stubs and the reference solutions ship inside
this package (``stubs/`` and ``solutions/`` next to this file), so everything below works after
a plain ``pip install`` with no repository around:

    python -m tinygrad_mha.exercises list                     # the exercises, where the files are
    python -m tinygrad_mha.exercises init my_exercises        # copy every stub (never overwrites)
    cd my_exercises
    python -m tinygrad_mha.exercises check softmax_backward   # grade your file
    python -m tinygrad_mha.exercises check                    # grade every exercise found here
    python -m tinygrad_mha.exercises check sum_to --dir my_exercises   # from anywhere else
    python -m tinygrad_mha.exercises check --solutions        # the reference solutions

The grader loads the file, calls the functions on freshly drawn random inputs and compares what
comes back with an independent reference: central finite differences for every gradient, a
NumPy formula for every forward value, and ``tm.gradcheck`` for the exercises that build
Tensors. Nothing is compared with a stored answer, so a solution cannot pass by copying numbers.

Exit codes: 0 every graded exercise passed, 1 something failed or is not implemented yet,
2 usage error (unknown exercise, no exercise files, ``init`` would overwrite a file). A failure
says which case (input shapes and values), which output and which element is wrong, what was
expected and what came back, a hint naming the usual mistake, and how to reproduce it
(``--seed``).

From Python: ``grade(name, solutions=False, directory=None, seed=None) -> Result`` and
``init(directory) -> list of written paths``.

Adding an exercise takes four small pieces, all named after it (say ``online_softmax``):

1. ``stubs/online_softmax.py``: the task in each function's docstring (Args, Returns), the
   body ``raise NotImplementedError("online_softmax: write your code here")``;
2. ``solutions/online_softmax.py``: the same functions, signatures and docstrings, solved;
3. ``_grade_online_softmax(module, rng)`` in ``checks.py``, registered in ``EXERCISES`` with
   its tutorial, one-line summary and hints;
4. the pytest marker ``online_softmax`` in pyproject.toml, and in tests/test_exercises.py at
   least one wrong solution (``WRONG``) it must catch and one differently written correct
   one (``RIGHT``) it must pass.

``tests/test_exercises.py`` checks that every exercise has all of these.
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
PACKAGE_DIR = Path(__file__).resolve().parent
STUBS = PACKAGE_DIR / "stubs"          # the one copy of each stub: `init` copies from here
SOLUTIONS = PACKAGE_DIR / "solutions"  # the reference solutions (`check --solutions`)

_HOW_TO_START = ("write the stubs with `python -m tinygrad_mha.exercises init DIR`, then run "
                 "`check` inside DIR, or pass --dir DIR")


def holds_exercises(folder: Path) -> bool:
    """True when ``folder`` holds at least one ``<exercise>.py`` file."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / f"{name}.py").is_file() for name in EXERCISES)


def find_directory(solutions: bool = False, start: Path | None = None) -> Path:
    """The folder to grade when no ``--dir`` is given.

    The reference solutions live in this package. Your own files are looked for in ``start``
    (default: the current folder), whatever its name, when it holds at least one
    ``<exercise>.py``; otherwise ``FileNotFoundError`` says how to get them (``init``).
    """
    if solutions:
        return SOLUTIONS
    start = Path.cwd() if start is None else Path(start)
    if holds_exercises(start):
        return start.resolve()
    raise FileNotFoundError(f"no exercise files (such as {next(iter(EXERCISES))}.py) in {start}: "
                            + _HOW_TO_START)


def init(directory) -> list[Path]:
    """Copy every stub into ``directory`` (created if missing) and return the written paths.

    Never overwrites: if any target file exists, ``FileExistsError`` names them and nothing
    is written.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a folder")
    targets = {name: directory / f"{name}.py" for name in EXERCISES}
    present = [str(path) for path in targets.values() if path.exists()]
    if present:
        raise FileExistsError(f"not overwriting {len(present)} existing file(s): "
                              f"{', '.join(present)} "
                              "(move them away or choose another folder); nothing was written")
    directory.mkdir(parents=True, exist_ok=True)
    for name, path in targets.items():
        path.write_bytes((STUBS / f"{name}.py").read_bytes())
    return list(targets.values())


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


def _explains(exercise: Exercise) -> str:
    return _tutorials(exercise) + (" explain" if " and " in exercise.tutorial else " explains")


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
    if directory is not None and folder.resolve() != Path.cwd().resolve():
        again += f" --dir {_shown(folder.resolve())}"
    elif solutions:
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
                      f"(its docstring states the task; {_explains(exercise)} it)")
    except ExerciseFailure as exc:
        text = exc.hint or exercise.hint  # the recognised mistake, else the usual ones
        hint = f"\n  hint: {text}" if text else ""
        return result(FAILED, f"{exc}{hint}\n  reproduce with: {again}")
    except Exception as exc:  # the learner's code crashed
        return result(FAILED, f"{type(exc).__name__}: {exc}\n{_learner_traceback(exc, path)}\n"
                              f"  reproduce with: {again}")
    return result(PASSED, f"{cases} cases passed (seed {seed})")


# ---------------------------------------------------------------- command line
def _list(prog: str) -> int:
    width = max(len(n) for n in EXERCISES)
    for exercise in EXERCISES.values():
        print(f"{exercise.name:<{width}}  {_tutorials(exercise):<20}  {exercise.summary}")
    here = Path.cwd()
    print()
    if holds_exercises(here):
        found = [n for n in EXERCISES if (here / f"{n}.py").is_file()]
        print(f"your files: {here} ({len(found)} of {len(EXERCISES)} exercises here); "
              f"grade one with: {prog} check <name>")
    else:
        print(f"your files: none in {here}; write them with: {prog} init DIR "
              f"(then run check inside DIR, or pass --dir DIR)")
    print(f"fresh stubs (copied by init): {STUBS}")
    print(f"reference solutions (check --solutions): {SOLUTIONS}")
    return 0


def main(argv=None, prog: str = "python -m tinygrad_mha.exercises") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="The exercises: copy the stubs into a folder of yours (init), "
                               "then grade your files on fresh random inputs (check).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the exercises and say where their files are")
    p = sub.add_parser("init",
                       help="write every stub into DIR (created if missing; never overwrites)")
    p.add_argument("dir", type=Path, metavar="DIR")
    p = sub.add_parser("check", help="grade one or more exercises (all found when none is named)")
    p.add_argument("names", nargs="*", metavar="NAME", help="exercise names, or 'all'")
    p.add_argument("--solutions", action="store_true",
                   help="grade the reference solutions shipped with the package instead")
    p.add_argument("--seed", type=int, default=None, help="draw the same random inputs again")
    p.add_argument("--dir", type=Path, default=None,
                   help="folder holding your <name>.py files (default: the current folder)")
    args = parser.parse_args(argv)

    if args.command == "list":
        return _list(prog)
    if args.command == "init":
        try:
            written = init(args.dir)
        except FileExistsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} exercise stubs to {_shown(args.dir.resolve())}/; next:\n"
              f"    cd {args.dir}\n    {prog} check {next(iter(EXERCISES))}")
        return 0

    unknown = [n for n in args.names if n not in EXERCISES and n != "all"]
    if unknown:
        print(f"error: unknown exercise(s) {', '.join(unknown)}; see `{prog} list`",
              file=sys.stderr)
        return 2
    try:
        if args.dir is not None:
            folder = args.dir
            if not folder.is_dir():
                raise FileNotFoundError(f"--dir {folder} is not a folder")
            if not args.names and not holds_exercises(folder):
                raise FileNotFoundError(f"no exercise files in --dir {folder}: " + _HOW_TO_START)
        else:
            folder = find_directory(args.solutions)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.names and args.names != ["all"]:
        chosen = list(dict.fromkeys(args.names))
    else:  # every exercise whose file is there (all of them for the solutions)
        chosen = [n for n in EXERCISES if (Path(folder) / f"{n}.py").is_file()]
    results = [grade(n, args.solutions, folder, args.seed) for n in chosen]
    for r in results:
        print(r.report())
    if len(results) > 1:
        print(f"{sum(r.passed for r in results)} of {len(results)} exercises passed")
    return 0 if all(r.passed for r in results) else 1
