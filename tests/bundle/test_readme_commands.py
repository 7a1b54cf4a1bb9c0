"""Every `monai.bundle run` command in the bundles' READMEs names configs that exist and ids they
define (the runs themselves are exercised in test_bundles.py with the same configs and ids on the tiny cohort)."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from harmonize.bundle import check_overrides, parse_overrides
from harmonize.bundle.run_bundle import RUN_ARGUMENTS

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NAMES = ["brain_age_unlearning", "tissue_seg_unlearning", "recon_unlearning"]


def _commands(readme: Path) -> list[list[str]]:
    """The argument lists after `monai.bundle run` in the README's bash blocks (continued lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    commands = []
    for line in lines:
        if "monai.bundle run" in line:
            # a shell comment starts at a '#' after a blank; ids hold '#' inside a word (--cohort#biased)
            arguments = re.sub(r"(^|\s)#.*$", "", line.split("monai.bundle run", 1)[1])
            tokens = shlex.split(arguments)
            commands.append(tokens)
    return commands


@pytest.mark.parametrize("name", NAMES)
def test_readme_runs_name_existing_configs_and_ids(name):
    bundle = BUNDLES / name
    commands = _commands(bundle / "docs" / "README.md")
    assert len(commands) >= 8
    for tokens in commands:
        overrides = parse_overrides(tokens)
        files = overrides.pop("config_file")
        files = ast.literal_eval(files) if isinstance(files, str) and files.startswith("[") else files
        files = [files] if isinstance(files, str) else list(files)
        assert all((bundle / f).is_file() for f in files), files
        check_overrides([str(bundle / f) for f in files],
                        {k: v for k, v in overrides.items() if k not in RUN_ARGUMENTS})
