"""Golden values: bytes that must be the same on every machine, pinned; the rest, repeatability.

Pinned (a change that moves one must be deliberate and said in CHANGELOG.md):
- the demo specs' plan hashes and spec hash: integer arithmetic and text;
- `builtin:tiny`'s fingerprint: its weights are drawn without float kernels
  (`generators.builtin.portable_init`), checked here also under torch's portable kernels;
- the layout of a shard of the demo plan written by the real shard writer
  (`shardgen.write_shard`: metadata, rows, tar) from a deterministic integer image source. The
  tar's PNG members are pinned with their compressed stream inflated: zlib-ng (Pillow's deflate)
  may compress differently on x86-64 and arm64, while the PNG chunks, filter bytes and pixels
  cannot differ.

Not pinned: pixels made by a diffusion model. They are float results, and float kernels differ
between CPU models of the same instruction set (the tiny demo's shard 0 hashed differently on an
AMD EPYC and an Intel Xeon, both AVX512). Their determinism is tested as repeatability on one
machine: the same shard made twice (below), across worker counts
(tests/test_flow_e2e.py::test_second_run_with_other_worker_count_is_byte_identical) and engines
(tests/test_engines.py), and `reproduce` (tests/lineage/test_lineage_reproduce.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq

from synthdata.fsutil import sha256_file
from synthdata.generation.generators.base import ImageGenerator, SampleRequest
from tests.lineage.conftest import DEMO_SPEC, REPO, build_dataset

DEMO_PLAN_HASH = "f7b2c5aa39f05371347de0e81c1eecb2457749ad08aa20547767dea5526c71ca"
DEMO_SPEC_HASH = "fbe6e97a64ddc24742b223714fdbeccd7a3a3fe545e7b6b65cf75ef0050e8f91"
PHANTOM_DEMO_PLAN_HASH = "0a56cd0e8c44e98afd6fdffc17a50beb254c1798e9591a1e540d1ec959498434"
TINY_FINGERPRINT = "aef25959c66e53d83ec31c67d39391cb49fb6c56437fb1225c403d1a9a6e9725"
# Shard 0 of specs/demo-tiny.yaml from IntegerImages: the tar with PNG streams inflated
# (`layout_digest`) and the JSON metadata of its first sample.
INTEGER_SHARD0_LAYOUT = "08ee077aeba139071b0d9573f4116469ca614cfb40c6f0dcc958e490dc0984a9"


def test_demo_plan_and_spec_hashes_are_pinned():
    from synthdata.plan.rows import plan_hash
    from synthdata.spec import spec_hash
    from synthdata.plan.load import load_spec

    demo = load_spec(DEMO_SPEC)
    assert plan_hash(demo) == DEMO_PLAN_HASH
    assert spec_hash(demo) == DEMO_SPEC_HASH
    assert plan_hash(load_spec(REPO / "specs" / "demo.yaml")) == PHANTOM_DEMO_PLAN_HASH


def test_builtin_tiny_is_the_same_model_with_any_cpu_kernels(tmp_path):
    """The fingerprint is pinned here, and a fresh build in another process running torch's
    portable (non-vectorized) kernels gives the same bytes: no float kernel touches the weights."""
    from synthdata.generation.fingerprint import model_fingerprint
    from synthdata.spec.models import Generator

    assert model_fingerprint(Generator(model="builtin:tiny")).fingerprint == TINY_FINGERPRINT
    code = ("import torch; from synthdata.generation.fingerprint import model_fingerprint; "
            "from synthdata.spec.models import Generator; "
            "print(torch.backends.cpu.get_cpu_capability(), "
            "model_fingerprint(Generator(model='builtin:tiny')).fingerprint)")
    env = {**os.environ, "SYNTHDATA_CACHE": str(tmp_path / "cache"), "ATEN_CPU_CAPABILITY": "default",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    assert done.stdout.split()[-2:] == ["DEFAULT", TINY_FINGERPRINT], done.stdout + done.stderr


class IntegerImages(ImageGenerator):
    """A deterministic integer image source: each image is a function of the request's seed,
    key and prompt computed in integers (no float operation anywhere)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, batch: Sequence[SampleRequest]) -> list[np.ndarray]:
        """One RGB uint8 image per request: gradients and a checker keyed by seed and prompt."""
        y, x = np.mgrid[0:self.height, 0:self.width].astype(np.int64)
        out = []
        for r in batch:
            k = int(hashlib.sha256(f"{r.key}\0{r.prompt}".encode()).hexdigest()[:8], 16)
            channels = [(x * (1 + k % 7) + y * (1 + r.seed % 5) + r.seed) % 256,
                        ((x // 8 + y // 8) % 2) * (k % 256),
                        (x * y + k + r.steps) % 251]
            out.append(np.stack(channels, axis=-1).astype(np.uint8))
        return out

    def describe(self) -> dict:
        """What ran (recorded in the shard's marker)."""
        return {"model": "integer-images", "device": "cpu", "dtype": "uint8", "speed": {}}


def png_layout(data: bytes) -> bytes:
    """A PNG's chunks with the compressed image stream (IDAT) replaced by its inflated bytes:
    filter bytes and pixels, independent of the deflate implementation."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IDAT":
            idat += body
            continue
        if idat:
            chunks.append(b"IDAT-inflated" + zlib.decompress(idat))
            idat = b""
        chunks.append(kind + body)
    return b"".join(struct.pack(">I", len(c)) + c for c in chunks)


def layout_digest(tar_path) -> str:
    """sha256 over every member's name, header fields and bytes (PNGs through `png_layout`)."""
    h = hashlib.sha256()
    with tarfile.open(tar_path, "r:") as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            body = png_layout(data) if m.name.endswith(".png") else data
            header = [m.name, m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname, m.type.decode(),
                      sorted(m.pax_headers.items())]
            h.update(json.dumps(header).encode() + b"\0" + hashlib.sha256(body).digest())
    return h.hexdigest()


def _integer_shard(out):
    from synthdata.dataset.prepare import prepare
    from synthdata.generation.shardgen import JobInfo, write_shard
    from synthdata.plan.load import load_spec

    spec = load_spec(DEMO_SPEC)
    prepared = prepare(out, spec)
    job = JobInfo(prepared.spec_hash, prepared.plan_hash, "integer-images")
    count = write_shard(spec, job, IntegerImages(spec.generator.height, spec.generator.width), out, 0)
    return count, prepared


def test_a_shard_from_integer_images_has_pinned_layout_and_repeats_byte_for_byte(tmp_path):
    count, prepared = _integer_shard(tmp_path / "a")
    assert (count, prepared.plan_hash) == (16, DEMO_PLAN_HASH)
    tar = tmp_path / "a" / "raw" / "shard-000000.tar"
    with tarfile.open(tar) as t:
        members = t.getmembers()
        first = json.loads(t.extractfile(members[1]).read())
    names = [m.name for m in members]
    assert names == sorted(names) and len(names) == 4 * 16
    assert {n.split(".", 1)[1] for n in names} == {"cls", "json", "png", "txt"}
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
    assert first["key"] == "demo-cxr-000000000" and first["plan_hash"] == DEMO_PLAN_HASH
    assert first["spec_hash"] == DEMO_SPEC_HASH and first["model"]["fingerprint"] == "integer-images"
    rows = pq.read_table(tmp_path / "a" / "raw" / "shard-000000.parquet").to_pylist()
    with tarfile.open(tar) as t:
        pngs = {m.name[:-4]: t.extractfile(m).read() for m in t if m.name.endswith(".png")}
    assert [r["png_sha256"] for r in rows] == [hashlib.sha256(pngs[r["key"]]).hexdigest() for r in rows]
    marker = json.loads((tmp_path / "a" / "raw" / "shard-000000.done.json").read_text())
    assert marker["tar_sha256"] == sha256_file(tar) and marker["count"] == 16
    assert layout_digest(tar) == INTEGER_SHARD0_LAYOUT, "the shard layout moved: say why in CHANGELOG.md"
    _integer_shard(tmp_path / "b")
    assert sha256_file(tmp_path / "b" / "raw" / "shard-000000.tar") == sha256_file(tar)


def test_png_layout_ignores_how_deflate_compressed_but_not_the_pixels():
    from PIL import Image

    from synthdata.folder.shards import encode_png

    image = IntegerImages(16, 16).generate([SampleRequest("k", "p", "", 3, 10, 4.0)])[0]
    png = encode_png(image)
    recompressed = _recompress(png, level=1)
    assert recompressed != png and png_layout(recompressed) == png_layout(png)
    import io

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(recompressed))), image)
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert png_layout(encode_png(changed)) != png_layout(png)


def _recompress(png: bytes, level: int) -> bytes:
    """The same PNG with its IDAT stream deflated again at another level (a different encoder)."""
    pos, out = 8, [png[:8]]
    chunks = []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        pos += 12 + length
        chunks.append((kind, body))
    idat = zlib.compress(zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT")), level)
    done = False
    for kind, body in chunks:
        if kind == b"IDAT":
            if done:
                continue
            kind, body, done = b"IDAT", idat, True
        out.append(struct.pack(">I", len(body)) + kind + body +
                   struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return b"".join(out)


def test_the_demo_first_shard_repeats_byte_for_byte_on_this_machine(demo_dataset, tmp_path):
    """Pixels of the tiny model: the same shard made again (same threads) gives the same tar."""
    again = build_dataset(tmp_path / "again", shards=(0,))
    assert sha256_file(again / "raw" / "shard-000000.tar") == sha256_file(
        demo_dataset / "raw" / "shard-000000.tar")
