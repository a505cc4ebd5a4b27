"""The package as a user installs it: a built wheel, non-editable, used outside the source tree.

An editable install finds the checkout's pyproject.toml above the package; an installed
wheel (the image, any ``pip install``) does not. Each test here builds the wheel once,
installs it into a fresh virtual environment that borrows the locked dependencies from
``.venv`` (a ``.pth`` line, so the checkout's editable finder is not loaded), and runs
the installed code from a directory that holds no project.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with the built wheel installed, a directory outside the tree)."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(ROOT)], check=True, cwd=work)
    wheels = list(dist.glob("ecom_ingest-*.whl"))
    assert len(wheels) == 1, wheels
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies, not the project: a .pth line adds the directory without running
    # its own .pth files (the editable install's finder lives in one of them).
    (site / "locked_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheels[0])], check=True)
    outside = work / "elsewhere"
    outside.mkdir()
    return python, outside


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECOM_INGEST_", "DAGSTER_", "PYTHONPATH"))}
    env["ECOM_INGEST_HOME"] = str(cwd / ".ecom_ingest")
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    python, outside = installed
    found = _run(python, outside, "-c", "import ecom_ingest_dagster; print(ecom_ingest_dagster.__file__)")
    assert found.returncode == 0, found.stderr
    path = Path(found.stdout.strip())
    assert ROOT not in path.parents, f"imported from the checkout: {path}"
    assert not any((parent / "pyproject.toml").exists() for parent in path.parents), path


def test_the_code_location_loads_from_the_installed_wheel(installed):
    python, outside = installed
    script = (
        "import warnings\n"
        "import dagster\n"
        "from ecom_ingest_dagster.definitions import defs\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    d = defs()\n"
        "print('dagster warnings:', [str(w.message) for w in caught if 'dagster' in w.category.__module__])\n"
        "print(sorted(j.name for j in d.resolve_all_job_defs()))\n"
        "print(sorted(s.name for s in d.sensors))\n"
    )
    loaded = _run(python, outside, "-c", script)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "ingest_job" in loaded.stdout and "stream_job" in loaded.stdout
    assert "landing_sensor" in loaded.stdout
    # Every code server, daemon and CLI process loads it: no warning of Dagster's own on the terminal.
    assert "dagster warnings: []" in loaded.stdout, loaded.stdout


def test_dagster_validates_the_installed_code_location(installed):
    """What the code server does at start: load the module by name, from anywhere."""
    python, outside = installed
    validated = _run(python, outside, "-m", "dagster", "definitions", "validate", "-m", "ecom_ingest_dagster.definitions")
    assert validated.returncode == 0, (validated.stdout + validated.stderr)[-3000:]


def test_the_report_template_ships_in_the_wheel(installed):
    python, outside = installed
    found = _run(python, outside, "-c",
                 "from importlib.resources import files; print(files('ecom_ingest_dagster.tools') / 'templates')")
    assert found.returncode == 0, found.stderr
    assert (Path(found.stdout.strip()) / "performance_report.md.j2").is_file()


def test_the_feed_contracts_ship_in_the_wheel(installed):
    python, outside = installed
    found = _run(python, outside, "-c", "from ecom_ingest_dagster import contract; print(contract.FEED.feed, contract.COLUMNS[0])")
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.split() == ["user_events", "event_id"]
