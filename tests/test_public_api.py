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
