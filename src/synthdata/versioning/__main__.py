"""`python -m synthdata.versioning resolve|stamp|prepare|reset|track|pull ...`: the verbs the
root `dvc.yaml` runs (see `synthdata.versioning.stages` and docs/dvc.md). `resolve` splits the
spec into per-stage dependencies (so a stage reruns only when what it reads changed), `stamp`
records an input file's content, `prepare` resets the output folder when the dataset changed.
"""

from __future__ import annotations

import sys

from synthdata.errors import SynthdataError
from synthdata.versioning.dvc import pull_outputs, track_outputs
from synthdata.versioning.reset import prepare_folder, reset_dataset, resolve_spec
from synthdata.versioning.stages import stamp


USAGE = """usage: python -m synthdata.versioning VERB ...
  resolve SPEC WORK PARAMS  write WORK/generate/dataset.json, WORK/screen/screening.json;
                            check PARAMS' generate_inputs/screen_inputs against the spec
  stamp PATH OUT        write the content digest of a file or folder to OUT
  prepare SPEC DIR      keep DIR if it holds this spec's dataset, else reset it (guarded)
  reset DIR NAME        remove dataset NAME's generated files from DIR (guarded)
  track DIR             dvc add its tars and tables, push to the default remote
  pull DIR              dvc pull them back"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m synthdata.versioning` (see USAGE); used by the root dvc.yaml."""
    args = sys.argv[1:] if argv is None else argv
    arity = {"resolve": 4, "stamp": 3, "prepare": 3, "reset": 3, "track": 2, "pull": 2}
    if not args or arity.get(args[0]) != len(args):
        print(USAGE, file=sys.stderr)
        return 2
    verb = args[0]
    try:
        if verb == "resolve":
            print("wrote " + ", ".join(str(p) for p in resolve_spec(args[1], args[2], args[3])))
        elif verb == "stamp":
            print(f"stamped {args[1]} -> {stamp(args[1], args[2])}")
        elif verb == "prepare":
            print(f"{args[2]}: {prepare_folder(args[1], args[2])}")
        elif verb == "reset":
            print(f"reset {args[1]}: removed {', '.join(reset_dataset(args[1], args[2])) or 'nothing'}")
        elif verb == "track":
            res = track_outputs(args[1])
            print(f"tracked {len(res.tracked)} path(s) in {res.repo}; pushed {res.pushed} to {res.remote}")
        else:
            print(f"pulled {', '.join(pull_outputs(args[1])) or 'nothing'}")
    except SynthdataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
