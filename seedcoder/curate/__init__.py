"""Model-centric code-data curation: raw repositories -> deduplicated, filtered, scored shards.

    seedcoder curate run --config configs/curate_demo.toml       # every step, resumable
    from seedcoder.curate.pipeline import run_pipeline, run_step

See `seedcoder.curate.pipeline` for the steps and the config, `seedcoder.curate.dataset` for the on-disk
format, `seedcoder.curate.executor` for the local / Ray executors, and docs/curation.md for the user guide.
Submodules are imported on use, so importing this package is cheap.
"""
