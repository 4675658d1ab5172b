"""The dataset folder, bottom layer of every writer and reader: its layout and the one
definition of a complete shard (`layout`), the tar shard files (`shards`), the commit protocol
(`journal`), immutable screening generations (`generations`) and pinned snapshots for readers
(`snapshot`). It imports nothing of synthdata but the bottom modules (errors, fsutil, faults)."""

from synthdata.folder.layout import FORMAT_VERSION, DatasetFolder, ShardState, shard_name, shard_of

__all__ = ["FORMAT_VERSION", "DatasetFolder", "ShardState", "shard_name", "shard_of"]
