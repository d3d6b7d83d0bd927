"""CRC32C (Castagnoli, the iSCSI / ext4 / SSE4.2 `crc32` instruction polynomial) for shard checksums.

`crc32c(data, value=0)` returns the standard CRC32C of `data` (reflected, init and xor-out 0xFFFFFFFF;
check value: crc32c(b"123456789") == 0xE3069283) and continues a running CRC when given the previous
result as `value`, so crc32c(b, crc32c(a)) == crc32c(a + b). `data` is any C-contiguous buffer
(bytes, memoryview, numpy array or memmap); it is read as raw bytes.

The PyPI package `crc32c` (hardware SSE4.2 / ARMv8 CRC, ~10 GB/s, releases the GIL, takes any buffer)
does the work. Where it is not installed (e.g. the offline GPU box, which installs with --no-deps) a
table-driven pure-Python fallback gives the same values at a few MB/s: fine for tests, too slow for
real shards, hence the one-time warning. `google-crc32c` was not chosen: it accepts only `bytes`-like
objects without a release hook, so every numpy section would have to be copied first.
"""

import warnings

try:
    import crc32c as _crc32c_package
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c_package = None

CASTAGNOLI_REFLECTED_POLYNOMIAL = 0x82F63B78


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CASTAGNOLI_REFLECTED_POLYNOMIAL if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()
_warned_slow = False


def crc32c_pure_python(data, value: int = 0) -> int:
    """The fallback: one table lookup per byte. Same contract as `crc32c`."""
    table = _TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in memoryview(data).cast("B"):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c(data, value: int = 0) -> int:
    """CRC32C of the bytes of `data`, continuing from `value` (the CRC of what came before)."""
    if _crc32c_package is not None:
        return _crc32c_package.crc32c(data, value)
    global _warned_slow
    if not _warned_slow and memoryview(data).nbytes > (1 << 20):
        warnings.warn("the `crc32c` package is not installed: checksumming with the slow pure-Python fallback", stacklevel=2)
        _warned_slow = True
    return crc32c_pure_python(data, value)


def have_fast_crc32c() -> bool:
    return _crc32c_package is not None
