"""Training checkpoints: atomic folders holding everything a resumed run needs.

`DIR/checkpoints/<stage>-step-<N>/` holds
- `params.safetensors`: every trained tensor so far (all stages), by name;
- `state.pt`: optimizer, LR scheduler and grad-scaler states, RNG states, losses, data position
  (plain tensors and numbers: loaded with `torch.load(weights_only=True)`);
- `checkpoint.json`: stage, step, spec hash, and the fingerprints of the training data (image
  contents, captions) and of the base model (weights and configs); written last, so a folder
  without it is ignored.

A checkpoint is written into a hidden temporary folder and renamed into place; the oldest
are removed beyond `keep`. Resuming takes the latest complete one, and only when it was made
from the same spec, the same images and the same base model: the spec hash sees neither a
folder's contents nor a model's weights, so adding images or swapping the base behind the same
path would otherwise continue one run on other inputs (no longer an exact resume).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from synthdata.errors import OutputError
from synthdata.fsutil import write_json_atomic

MARKER = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    stage_index: int
    stage: str
    step: int
    spec_hash: str
    data_fingerprint: str | None = None   # None: written before checkpoints recorded them
    base_fingerprint: str | None = None
    captions_fingerprint: str | None = None

    @property
    def order(self) -> tuple[int, int]:
        """Sort key: later stage, then later step."""
        return self.stage_index, self.step


def rng_states() -> dict:
    """torch, numpy and Python global RNG states (saved for completeness; steps use derived seeds)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": json.dumps(random.getstate())}


def restore_rng_states(states: dict) -> None:
    """Put back what rng_states() saved."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    state = json.loads(states["python"])
    random.setstate((state[0], tuple(state[1]), state[2]))


def save_checkpoint(root: Path, *, stage_index: int, stage: str, step: int, spec_hash: str,
                    params: dict[str, torch.Tensor], state: dict, keep: int,
                    data_fingerprint: str, base_fingerprint: str,
                    captions_fingerprint: str) -> Checkpoint:
    """Write a checkpoint atomically and prune old ones; return it."""
    folder = root / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{stage_index}-{stage}-step-{step:08d}"
    final = folder / name
    tmp = folder / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in params.items()},
                  str(tmp / "params.safetensors"))
        torch.save({**state, "rng": rng_states()}, tmp / "state.pt")
        info = {"stage_index": stage_index, "stage": stage, "step": step, "spec_hash": spec_hash,
                "data_fingerprint": data_fingerprint, "base_fingerprint": base_fingerprint,
                "captions_fingerprint": captions_fingerprint}
        write_json_atomic(tmp / MARKER, info)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return Checkpoint(final, stage_index, stage, step, spec_hash, data_fingerprint, base_fingerprint,
                      captions_fingerprint)


def list_checkpoints(root: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    folder = root / "checkpoints"
    found = []
    if folder.is_dir():
        for d in folder.iterdir():
            marker = d / MARKER
            if d.name.startswith(".") or not marker.is_file():
                continue
            try:
                info = json.loads(marker.read_text())
                found.append(Checkpoint(d, int(info["stage_index"]), str(info["stage"]),
                                        int(info["step"]), str(info["spec_hash"]),
                                        info.get("data_fingerprint"), info.get("base_fingerprint"),
                                        info.get("captions_fingerprint")))
            except (OSError, ValueError, KeyError):
                continue
    return sorted(found, key=lambda c: c.order)


def latest_checkpoint(root: Path, spec_hash: str, data_fingerprint: str,
                      base_fingerprint: str, captions_fingerprint: str) -> Checkpoint | None:
    """The latest complete checkpoint; OutputError naming what changed if it was made from
    another spec, other training images or another base model (or cannot tell: older ones)."""
    found = list_checkpoints(root)
    if not found:
        return None
    last = found[-1]
    if last.spec_hash != spec_hash:
        raise OutputError(f"{root} holds checkpoints of a different training spec "
                          f"({last.path.name}); use another --out or delete the folder to start over")
    if None in (last.data_fingerprint, last.base_fingerprint, last.captions_fingerprint):
        raise OutputError(f"{last.path}: written before checkpoints recorded the training data's "
                          "and the base model's fingerprints, so resuming it cannot be shown to "
                          f"continue the same run; delete {root / 'checkpoints'} to start over")
    changed = [f"{what} (fingerprint {then[:12]}… in {last.path.name}, {now[:12]}… now{why})"
               for what, then, now, why in (
                   ("the training images", last.data_fingerprint, data_fingerprint,
                    ": images added, removed or edited"),
                   ("the training captions", last.captions_fingerprint, captions_fingerprint, ""),
                   ("the base model", last.base_fingerprint, base_fingerprint,
                    ": other weights or configs at the same name"))
               if then != now]
    if changed:
        raise OutputError(f"{root}: {' and '.join(changed)} changed since the last checkpoint; "
                          "resuming would mix two trainings into one model. Restore them, or "
                          f"delete {root / 'checkpoints'} to start over, or use another --out")
    return last


def load_checkpoint(ckpt: Checkpoint, device: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(params, state) of a checkpoint; the state is loaded with weights_only=True."""
    params = load_file(str(ckpt.path / "params.safetensors"), device=device)
    state = torch.load(ckpt.path / "state.pt", map_location="cpu", weights_only=True)
    return params, state
