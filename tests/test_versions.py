"""The pins of requirements.txt and requirements-ray.txt lie inside pyproject.toml's declared ranges.

    python -m pytest -q tests/test_versions.py
"""
import re
import tomllib

from helpers import ROOT


def release(version):
    """(2, 13, 0) of "2.13.0" or "2.13.0+cpu": the numeric release, for comparing versions."""
    return tuple(int(part) for part in re.match(r"\d+(?:\.\d+)*", version).group(0).split("."))


def declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {}
    for requirement in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        name, minimum = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\d.]+)", requirement).groups()
        ranges[name.lower().replace("-", "_")] = release(minimum)
    return ranges


def pins():
    found = {}
    for file in ("requirements.txt", "requirements-ray.txt"):
        for line in (ROOT / file).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, version = line.split("==")
                found[name.lower().replace("-", "_")] = version
    return found


def test_every_pin_is_inside_its_declared_range():
    ranges, pinned = declared(), pins()
    assert set(pinned) == set(ranges)
    assert all(release(version) >= ranges[name] for name, version in pinned.items())


def test_the_oldest_supported_torch_and_torch_geometric_are_inside():
    ranges = declared()
    assert ranges["torch"] <= (2, 11) and ranges["torch_geometric"] <= (2, 8, 0)
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == ">=3.11"  # 3.12 inside; `except*` and asyncio.TaskGroup need 3.11
