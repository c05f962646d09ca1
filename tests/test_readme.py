"""The README's Python examples run as written and print what their comments say."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 2


def test_readme_examples_print_documented_values():
    for block in python_blocks():
        expected = [m.group(1).strip() for m in re.finditer(r"^print\(.*?\)[ \t]*#[ \t]*(.*)$", block, flags=re.M)]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {})
        printed = [line.strip() for line in out.getvalue().splitlines()]
        assert printed == expected
