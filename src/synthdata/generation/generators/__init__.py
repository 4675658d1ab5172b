"""Generators: image models behind one small interface (see base.py). Import-light on purpose."""

from synthdata.spec.models import BUILTIN_MODELS, PROCEDURAL_MODELS  # noqa: F401  (the names a spec may use)


def dtype_name(requested: str, device: str) -> str:
    """The dtype a generator runs in: 'auto' is float16 on a GPU, float32 elsewhere."""
    if requested == "auto":
        return "float16" if str(device).startswith("cuda") else "float32"
    return requested
