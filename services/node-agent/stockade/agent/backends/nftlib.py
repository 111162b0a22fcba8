"""Run nft scripts in-process through libnftables (the library behind the ``nft`` command).

A fork and exec of ``nft`` per delta costs more than the transaction itself; the library
keeps one context and answers in about a millisecond. The script syntax, the one-transaction
semantics of a batch and the error messages are those of ``nft -f``. When the library is
missing, `NftRunner` falls back to the ``nft`` binary.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from contextlib import AbstractContextManager, nullcontext

from stockade.agent import netns as ns

_OUTPUT_JSON = 1 << 4
_OUTPUT_TERSE = 1 << 11  # NFT_CTX_OUTPUT_TERSE: leave set contents out of listings


def _load() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


_LIB = _load()


class NftRunner:
    """``nft`` for one network namespace: ``run(text, json=False, terse=False) -> (ok, out, err)``."""

    def __init__(self, netns: str | None = None, use_library: bool = True) -> None:
        self.netns = netns
        self._lock = threading.Lock()
        self._ctx: int | None = None
        if use_library and _LIB is not None:
            with self._in_netns():
                self._ctx = _LIB.nft_ctx_new(0)
            _LIB.nft_ctx_buffer_output(self._ctx)
            _LIB.nft_ctx_buffer_error(self._ctx)

    @property
    def in_process(self) -> bool:
        """True when scripts run through the library, False when through the ``nft`` binary."""
        return self._ctx is not None

    def _in_netns(self) -> AbstractContextManager[None]:
        return ns.entered(self.netns) if self.netns else nullcontext()

    def run(self, text: str, json: bool = False, terse: bool = False) -> tuple[bool, str, str]:
        if self._ctx is None or _LIB is None:
            opts = [*(["-j"] if json else []), *(["-t"] if terse else [])]
            # `nft -j -f -` prints nothing for a listing: pass a single listing as arguments.
            one = text.startswith("list ") and "\n" not in text.strip()
            args = ["nft", *opts, *(text.split() if one else ["-f", "-"])]
            proc = ns.run(args, self.netns, input=None if one else text)
            return proc.returncode == 0, proc.stdout, proc.stderr
        flags = (_OUTPUT_JSON if json else 0) | (_OUTPUT_TERSE if terse else 0)
        with self._lock, self._in_netns():
            _LIB.nft_ctx_output_set_flags(self._ctx, flags)
            rc = _LIB.nft_run_cmd_from_buffer(self._ctx, text.encode())
            out = (_LIB.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
            err = (_LIB.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        return rc == 0, out, err

    def close(self) -> None:
        if self._ctx is not None and _LIB is not None:
            _LIB.nft_ctx_free(self._ctx)
            self._ctx = None
