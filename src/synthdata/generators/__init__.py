"""Generators: image models behind one small interface (see base.py). Import-light on purpose."""

BUILTIN_MODELS = ("tiny", "phantom")  # diffusers pipelines (also training bases)
PROCEDURAL_MODELS = ("procedural",)  # no weights: drawn by code (generators.procedural)


def dtype_name(requested: str, device: str) -> str:
    """The dtype a generator runs in: 'auto' is float16 on a GPU, float32 elsewhere."""
    if requested == "auto":
        return "float16" if str(device).startswith("cuda") else "float32"
    return requested
