"""Training data on disk: scored code shards (`.scs`) and their dataset manifest.

`shards` (layout, id tables, `ShardError`), `shard_writer`, `shard_reader`, `manifest` (a directory of
shards), `shard_inspect` (`seedcoder shards inspect`); `build` makes a dataset from source files and `loader`
packs shards into training batches.
"""
