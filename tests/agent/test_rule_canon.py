"""The canonical rule forms the read-backs compare (pure): equal for the same rule however it is
printed, different for rules that do different things."""

from __future__ import annotations

from stockade.agent.backends.ipt_readback import canonical
from stockade.agent.backends.nft_canon import kernel_rule, rendered_rule


def payload(proto: str, field: str) -> dict[str, object]:
    return {"payload": {"protocol": proto, "field": field}}


def match(left: object, right: object, op: str = "==") -> dict[str, object]:
    return {"match": {"op": op, "left": left, "right": right}}


def test_nft_port_rule_reads_as_rendered() -> None:
    rule = {"expr": [match(payload("udp", "dport"), 20053), {"accept": None}]}
    assert kernel_rule(rule) == rendered_rule("udp dport 20053 accept")
    other = {"expr": [match(payload("udp", "dport"), 20054), {"accept": None}]}
    assert kernel_rule(other) != rendered_rule("udp dport 20053 accept")
    assert kernel_rule({"expr": [{"accept": None}]}) != rendered_rule("udp dport 20053 accept")


def test_nft_hosts_peer_with_signed_offsets() -> None:
    """nft prints numgen offsets as signed 32-bit numbers; the renderer writes them unsigned."""
    key = {
        "concat": [
            payload("ip", "saddr"),
            {"numgen": {"mode": "random", "mod": 1, "offset": 109647456}},
            {"numgen": {"mode": "random", "mod": 1, "offset": -639921556}},
        ]
    }
    rule = {
        "expr": [match(key, "@hosts4"), match(payload("tcp", "dport"), {"range": [20500, 20510]}), {"accept": None}]
    }
    line = (
        "ip saddr . numgen random mod 1 offset 109647456 . numgen random mod 1 offset 3655045740 @hosts4 "
        "tcp dport 20500-20510 accept"
    )
    assert kernel_rule(rule) == rendered_rule(line)


def test_nft_anonymous_set_order_and_counters_ignored() -> None:
    rule = {"expr": [match(payload("tcp", "dport"), {"set": [80, 443, {"range": [8000, 8080]}]}), {"return": None}]}
    assert kernel_rule(rule) == rendered_rule("tcp dport { 8000-8080, 443, 80 } return")
    deny = {
        "expr": [{"log": {"prefix": "in_x", "group": 100}}, {"counter": {"packets": 7, "bytes": 420}}, {"drop": None}],
        "comment": "deny g100 r0",
    }
    assert kernel_rule(deny) == rendered_rule('log group 100 prefix "in_x" counter drop comment "deny g100 r0"')
    accept = {**deny, "expr": [*deny["expr"][:2], {"accept": None}]}  # type: ignore[index]
    assert kernel_rule(accept) != kernel_rule(deny)


def test_nft_unknown_expression_never_equals_a_rendered_line() -> None:
    odd = {"expr": [match({"meta": {"key": "mark"}}, 1), {"queue": {"num": 1}}]}
    text = kernel_rule(odd)
    assert '"queue"' in text  # kept as JSON
    assert text != rendered_rule("meta mark 1 accept")


def test_ipt_option_order_and_defaults() -> None:
    rendered = "-m limit --limit 5/sec --limit-burst 5 -j NFLOG --nflog-group 100 --nflog-prefix in_x"
    saved = "-m limit --limit 5/sec -j NFLOG --nflog-prefix in_x --nflog-group 100"
    assert canonical(rendered) == canonical(saved)
    assert canonical("-m limit --limit 5/sec --limit-burst 10 -j NFLOG") != canonical("-m limit --limit 5/sec -j NFLOG")


def test_ipt_different_rules_differ() -> None:
    base = "-p udp -m multiport --dports 20053 -j RETURN"
    assert canonical(base) != canonical(base.replace("20053", "20054"))
    assert canonical(base) != canonical("-j RETURN")
    assert canonical("-m comment --comment deny -j DROP") != canonical("-m comment --comment deny -j ACCEPT")
    assert canonical("-m set --match-set A src -j RETURN") != canonical("-m set --match-set A dst -j RETURN")
    assert canonical("! -s 10.0.0.1/32 -j RETURN") != canonical("-s 10.0.0.1/32 -j RETURN")
