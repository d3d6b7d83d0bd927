"""The C++ loader as an NVIDIA DALI pipeline, for training loops that already feed GPUs through DALI.

    from seedcoder.data.loader import ShardLoader
    from seedcoder.data.dali import dali_pipeline
    loader = ShardLoader("data/", seq_len=4096, batch_size=8)
    pipeline = dali_pipeline(loader, device_id=0)   # device_id=None: a CPU-only pipeline
    pipeline.build()
    input_ids, labels, position_ids, loss_mask, cu_seqlens = pipeline.run()

The loader stays the source of truth (plan, packing, FIM, ranks, state_dict); DALI only moves its batches
through an `external_source` (one DALI sample = one row). DALI has no per-batch outputs, so `cu_seqlens` is
given per row: the row's own segment boundaries, 0 ... seq_len (variable length); the batch-wide
cu_seqlens of the loader is the rows' lists offset by row * seq_len and joined. `max_seqlen` is the
largest row-local segment, which the caller can compute from them. Needs `nvidia-dali` (optional, not
installed by default: the tests skip with that reason).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

OUTPUT_NAMES = ("input_ids", "labels", "position_ids", "loss_mask", "cu_seqlens")


def _row_batches(loader) -> Iterator[list[list[np.ndarray]]]:
    """One list per output, one array per row, from the loader's batches."""
    for batch in loader:
        seq_len = batch["input_ids"].shape[1]
        cu = batch["cu_seqlens"].numpy()
        rows = batch["input_ids"].shape[0]
        per_row_cu = []
        for r in range(rows):
            inside = cu[(cu >= r * seq_len) & (cu <= (r + 1) * seq_len)] - r * seq_len
            per_row_cu.append(np.ascontiguousarray(inside, dtype=np.int32))
        yield [
            [row for row in batch["input_ids"].numpy()],
            [row for row in batch["labels"].numpy()],
            [row for row in batch["position_ids"].numpy()],
            [row.astype(np.uint8) for row in batch["loss_mask"].numpy()],
            per_row_cu,
        ]


def dali_pipeline(loader, *, device_id: int | None = 0, num_threads: int = 1, prefetch_queue_depth: int = 2):
    """A DALI pipeline whose outputs are the loader's rows (OUTPUT_NAMES, in that order); GPU outputs when
    device_id is given, CPU outputs with device_id=None. The pipeline's batch size is the loader's."""
    from nvidia.dali import fn, pipeline_def

    source = _row_batches(loader)

    @pipeline_def(
        batch_size=loader.batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=prefetch_queue_depth
    )
    def packed_rows():
        outputs = fn.external_source(source=source, num_outputs=len(OUTPUT_NAMES), batch=True, cycle="raise")
        if device_id is not None:
            outputs = [output.gpu() for output in outputs]
        return tuple(outputs)

    return packed_rows()
