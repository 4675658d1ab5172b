"""Generators: image models behind one small interface (see base.py). Import-light on purpose."""

BUILTIN_MODELS = ("tiny",)
