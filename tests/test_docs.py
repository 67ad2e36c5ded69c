"""The docs keep up with the code: the generated CLI reference is current, every hook and every command is
documented and tested, links between the docs resolve, and the README stays short."""
import re
import sys
from pathlib import Path

import pytest

from retinaseg import hookspecs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from cli_reference import commands, reference  # noqa: E402

TESTS = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))
COMMANDS = [path for path, _ in commands() if path]


def test_the_cli_reference_is_current():
    assert (ROOT / "docs" / "cli.md").read_text() == reference(), \
        "docs/cli.md is out of date: run `python tools/cli_reference.py`"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_has_a_fake_plugin_in_the_tests(hook):
    assert f"### `{hook}(register)`" in (ROOT / "docs" / "plugins.md").read_text()
    assert f"def {hook}(self, register)" in TESTS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_is_documented_and_invoked_by_a_test(path):
    assert f"## `retinaseg {' '.join(path)}`" in (ROOT / "docs" / "cli.md").read_text()
    invocation = ", ".join(f'"{name}"' for name in path)  # as a test's argument list names it: "weights", "pack"
    assert f"[{invocation}" in TESTS or f'["{path[-1]}"' in TESTS or f'"{path[-1]}", ' in TESTS, path


def test_links_between_the_docs_resolve():
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_stays_short_and_says_the_demo_photos_are_synthetic():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    assert "synthetic" in readme
