"""Kernel object names for model ids, shared by the renderers and the read-back parsers.

Model ids are opaque strings. Ids that are already safe identifiers are used as they are (so a
human reading ``nft list ruleset`` sees the model's ids); anything else is replaced by a digest.
The read-back never needs to invert a name: it compares the kernel with the desired model in
name space.
"""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"^[A-Za-z0-9_]{1,40}$")


def _digest(text: str, size: int = 6) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


# nf_tables names are at most 255 bytes (NFT_NAME_MAXLEN, with the NUL); ours stay far below:
# a safe id is at most 40 characters, so the longest name is "a6_" + 40 = 43.
NFT_NAME_MAX = 255


def nft_set(set_id: str) -> str:
    """The IPv4 kernel set of an address set."""
    return f"a_{set_id}" if _SAFE.match(set_id) else f"a_x{_digest(set_id)}"


def nft_set6(set_id: str) -> str:
    """The IPv6 twin of `nft_set`: "a6_" never starts an IPv4 set's name ("a_" + id)."""
    return f"a6_{set_id}" if _SAFE.match(set_id) else f"a6_x{_digest(set_id)}"


def nft_set_of(set_id: str, version: int) -> str:
    return nft_set6(set_id) if version == 6 else nft_set(set_id)


def nft_chain(chain_id: str) -> str:
    # Chain ids are "in_<hex>" / "out_<hex>", which never collide with our fixed names.
    if _SAFE.match(chain_id) and chain_id.startswith(("in_", "out_")):
        return chain_id
    return f"c_x{_digest(chain_id)}"


def nft_ports(body: str) -> str:
    """A shared port chain, named by its rules' text: "p_" starts no other chain of ours."""
    return f"p_{_digest(body)}"


# ipset and iptables names are short: ipset ≤ 31 characters, iptables chains ≤ 28.
def ipset_set(set_id: str) -> str:
    return f"STK-A-{_digest(set_id, 8)}"


def ipset_pods(chain_id: str) -> str:
    return f"STK-P-{_digest(chain_id, 8)}"


def ipt_chain(chain_id: str) -> str:
    if _SAFE.match(chain_id) and len(chain_id) <= 24:
        return f"STK-{chain_id}"
    return f"STK-X{_digest(chain_id, 8)}"
