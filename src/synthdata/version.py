"""synthdata's version (bottom layer; `synthdata.__version__`)."""

VERSION = "0.1.0"
