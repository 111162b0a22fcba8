"""Kernel object names for model ids, shared by the renderers and the read-back parsers.

Model ids are opaque strings. Ids that are already safe identifiers are used as they are (so a
human reading ``nft list ruleset`` sees the model's ids); anything else is replaced by a digest.
The read-back never needs to invert a name: it compares the kernel with the desired model in
name space.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable

_SAFE = re.compile(r"^[A-Za-z0-9_]{1,40}\Z")


def _digest(text: str, size: int = 6) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


# nf_tables names are at most 255 bytes (NFT_NAME_MAXLEN, with the NUL); ours stay far below:
# a safe id is at most 40 characters, so the longest name is "a6_" + 40 = 43.
NFT_NAME_MAX = 255


@functools.lru_cache(maxsize=1 << 14)  # every model set, at every snapshot and verify
def nft_set(set_id: str) -> str:
    """The IPv4 kernel set of an address set."""
    return f"a_{set_id}" if _SAFE.fullmatch(set_id) else f"a_x{_digest(set_id)}"


@functools.lru_cache(maxsize=1 << 14)
def nft_set6(set_id: str) -> str:
    """The IPv6 twin of `nft_set`: "a6_" never starts an IPv4 set's name ("a_" + id)."""
    return f"a6_{set_id}" if _SAFE.fullmatch(set_id) else f"a6_x{_digest(set_id)}"


def nft_set_of(set_id: str, version: int) -> str:
    return nft_set6(set_id) if version == 6 else nft_set(set_id)


@functools.lru_cache(maxsize=1 << 14)  # every rule naming a host-only set, every delta touching one
def nft_tag(set_id: str) -> tuple[int, int]:
    """A host-only address set's tag in the shared hosts sets: two 32-bit words of a digest of
    its id, so every snapshot and delta finds the same tag with no state (collisions are
    refused, `nft_render.tag_owners`)."""
    d = hashlib.blake2b(set_id.encode(), digest_size=8, person=b"stockade-tag").digest()
    return int.from_bytes(d[:4], "big"), int.from_bytes(d[4:], "big")


def nft_chain(chain_id: str) -> str:
    # Chain ids are "in_<hex>" / "out_<hex>", which never collide with our fixed names.
    if _SAFE.fullmatch(chain_id) and chain_id.startswith(("in_", "out_")):
        return chain_id
    return f"c_x{_digest(chain_id)}"


def nft_ports(body: str) -> str:
    """A shared port chain, named by its rules' text: "p_" starts no other chain of ours."""
    return f"p_{_digest(body)}"


# ipset and iptables names are short: ipset ≤ 31 characters, iptables chains ≤ 28. Model ids
# do not fit, so the names are digests as wide as fits (88 bits: "STK-PI6-" + 22 = 30), and
# `check_ipt_names` refuses a model in which two ids would share one kernel object.
_IPT_DIGEST = 11


@functools.lru_cache(maxsize=1 << 17)
def ipset_set(set_id: str) -> str:
    return f"STK-A-{_digest(set_id, _IPT_DIGEST)}"


@functools.lru_cache(maxsize=1 << 17)
def ipset_pods(chain_id: str) -> str:
    return f"STK-P-{_digest(chain_id, _IPT_DIGEST)}"


@functools.lru_cache(maxsize=1 << 17)
def ipt_chain(chain_id: str) -> str:
    if _SAFE.fullmatch(chain_id) and len(chain_id) <= 24:
        return f"STK-{chain_id}"
    return f"STK-X{_digest(chain_id, _IPT_DIGEST)}"


class NameCollision(ValueError):
    """Two model ids map to one kernel name: applying would merge them, so nothing is applied."""


def check_ipt_names(set_ids: Iterable[str], chain_ids: Iterable[str]) -> None:
    """Raise `NameCollision` when two ids of a model would share an ipset or iptables name."""
    seen: dict[str, str] = {}
    for kind, ids, namers in (
        ("address set", set_ids, (ipset_set,)),
        ("chain", chain_ids, (ipset_pods, ipt_chain)),
    ):
        for ident in ids:
            for namer in namers:
                name = namer(ident)
                other = seen.setdefault(name, ident)
                if other != ident:
                    raise NameCollision(
                        f"{kind} {ident} and {other} both map to the kernel name {name}: refusing to apply "
                        "this model (they would share rules); report this as a bug"
                    )
