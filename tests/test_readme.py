"""The Python examples of README.md and docs/api.md run as written."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PAGES = ("README.md", "docs/api.md")


def _python_blocks(page):
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_page_has_examples(page):
    assert _python_blocks(page)


@pytest.mark.slow
@pytest.mark.parametrize("page, index", [(p, i) for p in PAGES for i in range(len(_python_blocks(p)))])
def test_example_runs(page, index):
    exec(compile(_python_blocks(page)[index], f"{page}[python block {index}]", "exec"), {})


def _shell_lines():
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.splitlines():
            if line.strip():
                yield line.split("#")[0].split()


def test_readme_commands_name_what_exists():
    """Each shell command of the README is valid: make targets, pip extras, experiments with their configs
    and --set fields (parsed, not run: the runs are tests/test_experiments*.py)."""
    import ast
    import importlib
    import tomllib

    from experiments import common

    makefile = (ROOT / "Makefile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    kinds = set()
    for words in _shell_lines():
        if words[0] == "make":
            assert re.search(rf"^{words[1]}:", makefile, flags=re.M), words
        elif words[:3] == ["pip", "install", "-e"]:
            wanted = re.fullmatch(r"'?\.(?:\[([a-z,]+)\])?'?", words[3]).group(1)
            assert set((wanted or "").split(",")) - {""} <= set(extras), words
        elif words[0].endswith("jaxinterp") and words[1] == "run":
            module = importlib.import_module(f"experiments.{words[2]}")
            args, config = common.parse(words[3:], module.get_config, module.__doc__)
            fresh = module.get_config(args.config)                    # the named config exists
            for item in args.set:                                     # and each --set field took its value
                field, value = item.split("=", 1)
                assert field in fresh and config[field] == ast.literal_eval(value), item
        else:
            raise AssertionError(f"README command not checked: {' '.join(words)}")
        kinds.add(words[0].rsplit("/", 1)[-1])
    assert kinds == {"make", "pip", "jaxinterp"}
    for path in re.findall(r"`\.venv/bin/python (\S+)`", (ROOT / "README.md").read_text()):
        assert (ROOT / path).is_file(), path
