"""`synthdata run` killed in its screening commit, then run again: the whole folder equals the
uninterrupted demo run's. The suite's bounded share of the 20 random kills that
`benchmarks/bench_crash.py` makes (RESULTS.md); a kill mid-generation is in test_flow_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from crash_ops import contents, unaccepted_published

from synthdata.dataset.health import verify
from tests.conftest import DEMO_SPEC, REPO

pytestmark = pytest.mark.e2e


def test_a_run_killed_in_its_screening_commit_resumes_to_the_uninterrupted_folder(
        demo_run, prefect_server, tmp_path):
    out = tmp_path / demo_run.name  # the card names its folder: the same name as the baseline's
    env = {**os.environ, "PREFECT_API_URL": prefect_server,
           "SYNTHDATA_FAULT": "screening.after_exchange:kill"}
    killed = subprocess.run([sys.executable, "-m", "synthdata.cli", "run", str(DEMO_SPEC), "--out",
                             str(out), "--workers", "2"], cwd=REPO, env=env, check=False,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert (out / ".commit.json").is_file(), "died with the screening committed, not yet in place"
    assert not unaccepted_published(out)
    from synthdata.flow import synthdata_run

    result = synthdata_run(str(DEMO_SPEC), out_dir=str(out), workers=2)
    assert result["skipped"] == 3 and result["generated"] == 0
    # spec.yaml and the card record the last command's execution options, and other tests rerun
    # the demo folder with other ones: every other file is compared
    last_options = ("spec.yaml", "README.md")
    assert {k: v for k, v in contents(out).items() if k not in last_options} == \
        {k: v for k, v in contents(demo_run).items() if k not in last_options}
    assert verify(out).ok
