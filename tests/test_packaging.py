"""The package as a wheel sees it: every folder of code is a package, and every data file is declared.

``.ci/wheel_check`` builds and installs the wheel for real; these checks catch the same mistakes in a second.
"""

from __future__ import annotations

import configparser
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_of_code_is_a_package() -> None:
    found = set(find_packages(where=ROOT, include=["harmonize*"]))
    folders = {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in (ROOT / "harmonize").rglob("*.py")}
    assert folders - found == set(), "folders without __init__.py are left out of the wheel"


def test_distribution_name_is_not_the_taken_one() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    # "harmonize" on the package index is an unrelated audio tool; the import name stays harmonize.
    assert cfg["metadata"]["name"] == "harmonize-mri"


def test_data_files_of_the_package_are_declared() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["harmonize"].split(",")]
    data = [p.relative_to(ROOT / "harmonize") for p in (ROOT / "harmonize").rglob("*")
            if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts]
    undeclared = [str(p) for p in data if not any(p.match(pattern) or p.name == pattern for pattern in patterns)]
    assert data and undeclared == []
