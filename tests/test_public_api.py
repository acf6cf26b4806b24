"""The public surface: ``acetest_ml.__all__``, cheap to import, typed."""
import configparser
import os
import subprocess
import sys
from pathlib import Path

import acetest_ml

REPO = Path(__file__).resolve().parents[1]


def test_import_is_cheap():
    code = ("import sys, acetest_ml; "
            "heavy = [m for m in ('tensorflow', 'torch', 'z3', 'lightgbm', 'sklearn', 'numpy') "
            "if m in sys.modules]; print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_every_public_name_resolves():
    from acetest_ml.campaign import run_campaign
    from acetest_ml.model import AbstractInput
    from acetest_ml.settings import CampaignConfig
    assert "CampaignConfig" in acetest_ml.__all__ and "ValidityModel" in acetest_ml.__all__
    for name in acetest_ml.__all__:
        assert getattr(acetest_ml, name) is not None, name
    assert acetest_ml.CampaignConfig is CampaignConfig
    assert acetest_ml.run_campaign is run_campaign
    assert acetest_ml.AbstractInput is AbstractInput
    assert acetest_ml.Outcome.PASS == "pass"
    try:
        acetest_ml.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("unknown attribute did not raise")


def test_py_typed_and_registry_are_package_data():
    pkg = REPO / "acetest_ml"
    assert (pkg / "py.typed").is_file()
    assert (pkg / "configs" / "models.yaml").is_file()
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    data = cfg["options.package_data"]["acetest_ml"]
    assert "py.typed" in data and "configs/*.yaml" in data
    # mypy is configured and CI runs it
    assert cfg.has_section("mypy")
    assert "mypy" in (REPO / ".ci" / "run").read_text()


def test_readme_documents_exactly_the_public_names():
    import re
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in section.splitlines() if l.startswith("| `")]
    documented = {n for row in rows for n in re.findall(r"`([A-Za-z_]\w*)(?:\(|`)", row.split("|")[1])}
    assert documented == set(acetest_ml.__all__) - {"__version__"}


def test_readme_names_the_modules_of_the_solve_package():
    # the Layout table's solve/ row names its modules; each of them exists
    import re
    text = (REPO / "README.md").read_text()
    row = next(l for l in text.splitlines() if l.startswith("| `acetest_ml/solve/`"))
    named = set(re.findall(r"`(\w+)`", row)) - {"acetest_ml"}
    assert {"smt2", "z3walk", "acetest_problem", "fill"} <= named
    for m in named:
        assert (REPO / "acetest_ml" / "solve" / f"{m}.py").is_file(), m
