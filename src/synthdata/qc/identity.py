"""What a shard marker records of the QC that made it: the classifier folders' fingerprints
(`classifier_fingerprints`, from the spec) and the identity of the checks a worker built and
used (`checks_identity`), so a folder refuses shards made by other classifiers or another
top-up screening setup."""

from __future__ import annotations

from pathlib import Path

from synthdata.fsutil import folder_sha256
from synthdata.spec import Spec


def classifier_fingerprints(spec: Spec) -> dict[str, str]:
    """{"qc.checks.I.model": sha256 of the folder's files} of every QC classifier check."""
    checks = spec.qc.checks if spec.qc is not None else []
    folders = {f"qc.checks.{i}.model": c.model for i, c in enumerate(checks) if c.check == "classifier"}
    if not folders:
        return {}
    return {k: folder_sha256(Path(v).expanduser().resolve()) for k, v in folders.items()}


def checks_identity(spec: Spec, checks: list) -> dict:
    """The `qc` and `memorization` identity fields of the checks a worker built and used
    (`qc.build_checks` in spec order, then the top-up memorization check)."""
    cfgs = spec.qc.checks if spec.qc is not None else []
    qc = {f"qc.checks.{i}.model": check.params["fingerprint"]
          for i, (cfg, check) in enumerate(zip(cfgs, checks)) if cfg.check == "classifier"}
    memorization = next((c.params.get("setup") for c in checks if c.name == "memorization"), None)
    return {"qc": qc, "memorization": memorization}
