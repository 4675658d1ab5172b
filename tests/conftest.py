"""Session-wide test setup: offline, quiet, one Prefect server, one built-in model cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Also imported as `tests.conftest` by test modules: the session folder is made once.
_SESSION_TMP = Path(os.environ.get("SYNTHDATA_TEST_TMP") or tempfile.mkdtemp(prefix="synthdata-tests-"))
os.environ.update({
    "SYNTHDATA_TEST_TMP": str(_SESSION_TMP),
    "HF_HUB_OFFLINE": "1",
    "SYNTHDATA_CACHE": str(_SESSION_TMP / "cache"),
    "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
    "DVC_SITE_CACHE_DIR": str(_SESSION_TMP / "dvc-site"),
    "HF_HOME": str(_SESSION_TMP / "hf"),
    "HF_DATASETS_CACHE": str(_SESSION_TMP / "hf-datasets"),
})
from synthdata.cli import quiet_environment  # noqa: E402

quiet_environment()

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "specs" / "demo-tiny.yaml"


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session (setup ~20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def demo_run(prefect_server, tmp_path_factory) -> Path:
    """The demo spec run once end to end through the real Prefect flow (2 workers)."""
    from synthdata.flow import synthdata_run

    out = tmp_path_factory.mktemp("demo") / "out"
    synthdata_run(str(DEMO_SPEC), out_dir=str(out), workers=2)
    return out
