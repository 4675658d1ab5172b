"""Profile the hot path: one shard task body (generation, PNG encoding, tar, rows, marker).

Runs synthdata.generation.worker.generate_shard under pyinstrument (pip install -e ".[bench]") after a
warm-up shard, and prints the call tree and the functions with the most self time.

    python benchmarks/bench_profile.py --count 32 --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import emit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from pyinstrument import Profiler

    from synthdata.generation import worker
    from synthdata.plan.load import load_spec_text

    spec = load_spec_text(f"""
name: prof
count: {args.count}
labels: {{a: {{weight: 1, prompts: ["PA chest x-ray of a {{age}} year old"]}}}}
vars: {{age: {{min: 20, max: 90}}}}
generator: {{model: builtin:tiny, steps: {args.steps}, height: {args.height}, width: {args.height},
            batch_size: {args.batch}, dtype: float32}}
shards: {{size: {args.count}}}
""")
    work = Path(tempfile.mkdtemp(prefix="bench-prof-"))
    job = worker.job_as_dict(worker.JobInfo("s", "p", "f"))
    data = spec.model_dump(mode="json")
    worker.generate_shard(data, str(work / "warm"), 0, job, args.threads)
    profiler = Profiler(interval=0.001)
    profiler.start()
    worker.generate_shard(data, str(work / "timed"), 0, job, args.threads)
    session = profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])
    frames = {}

    def walk(frame):
        name = frame.function
        frames[name] = frames.get(name, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child)

    root = profiler.last_session.root_frame()
    walk(root)
    total = session.duration
    top = sorted(frames.items(), key=lambda kv: -kv[1])[:12]
    emit("profile", {"count": args.count, "steps": args.steps, "wall_s": total,
                     "top_self_time_s": dict(top)}, args.record)


if __name__ == "__main__":
    main()
