"""The model catalogue: which models exist, where their weights come from, how to prompt them,
and how they measured (`synthdata models list|show|rank|add`; `model: catalog:ID` in a spec).

`models` is the entry schema (pydantic, exported as JSON Schema), `store` reads the shipped
and user entries and ranks them, `expand` turns `catalog:ID` into a spec's generator fields.
"""

from synthdata.catalog.expand import expand_catalog
from synthdata.catalog.models import Entry, entry_schema
from synthdata.catalog.store import CatalogError, add, entries, get, rank

__all__ = ["CatalogError", "Entry", "add", "entries", "entry_schema", "expand_catalog", "get", "rank"]
