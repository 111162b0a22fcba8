"""The demo's last steps: the administrator's ClusterNetworkPolicy tiers on the Sock Shop.

8. The Admin tier: a Deny that keeps every namespace but the shop's own away from its databases.
   Another team's namespace (analytics) then gets a NetworkPolicy in sock-shop that lets it in to
   orders and orders-db: real packets show orders open and every database still closed (an Admin
   Deny is final), `stockade explain` names the Admin tier's policy and rule, and `stockade drops
   top --by policy` counts the drops under that rule.
9. The Baseline tier: the shop's default deny as a Baseline policy, in place of the beta
   annotation (removed only once the Baseline is in place, so the shop is never open). The
   Baseline decides only for pods no NetworkPolicy selects, and the published `cortex-access`
   (an empty podSelector) selects them all; it admits a Cortex this shop does not run, so it is
   deleted, and the pods no other policy selects are left to the Baseline: the same connections
   work and the same stay blocked, now by the Baseline tier where no NetworkPolicy decides.

Only the nftables backend enforces the tiers; on another backend these steps say so and stop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from stockade.lab import demo, lab
from stockade.lab.config import LabConfig
from stockade.lab.lab import Say
from stockade.lab.state import LabState

OUTSIDER = "analytics/reports"  # another team's pod (tiers/analytics.yaml)
DATABASES: list[tuple[str, int]] = [
    ("carts-db", 27017),
    ("catalogue-db", 3306),
    ("orders-db", 27017),
    ("session-db", 6379),
    ("user-db", 27017),
]
ADMIN_FLOWS: list[tuple[str, str, int]] = [
    (OUTSIDER, "orders", 80),  # the namespace policy opens it: nothing above it says no
    *((OUTSIDER, db, port) for db, port in DATABASES),  # the Admin tier's Deny: final
    ("orders", "orders-db", 27017),  # the shop's own database calls are not the Admin's business
    ("catalogue", "catalogue-db", 3306),
    ("user", "user-db", 27017),
]
ADMIN_POLICY = "admin-protect-databases.yaml"
BASELINE_POLICY = "baseline-default-deny.yaml"
OUTSIDERS = "analytics.yaml"
OUTSIDER_POLICY = "netpol-analytics-reads-orders.yaml"
DROPS_TOP = ["drops", "top", "--by", "policy"]  # the last 15 minutes: the whole demo


def tiers_dir() -> Path:
    env = os.environ.get("STOCKADE_SOCK_SHOP_TIERS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "examples" / "sock-shop-tiers"


def stockade(cfg: LabConfig, say: Say, *args: str) -> int:
    """Run a `stockade` command as the user would, against this lab's brain, and show its answer."""
    say("   $ stockade " + " ".join(args))
    env = {**os.environ, "STOCKADE_LAB_DIR": str(cfg.state_dir)}
    res = subprocess.run(
        [sys.executable, "-m", "stockade.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    text = (res.stdout + res.stderr).rstrip()
    # explain's lint hints were shown in step 7: its verdict and reasons are the point here
    text = text.split("\n  hints:")[0]
    say("\n".join(f"     {line}" for line in text.splitlines()))
    return res.returncode


def _wait_outsider_drops(st: LabState, pods: set[str], timeout: float = 60.0) -> bool:
    """Until the drop records (Redis) hold the outsider's attempt to each of `pods` (the agents
    report in batches); False at the deadline."""
    ns, name = OUTSIDER.split("/")
    deadline = time.monotonic() + timeout
    while True:
        records = demo.drop_records(st, limit=200) or []
        seen = {r.get("dst_pod", "") for r in records if (r.get("src_namespace"), r.get("src_pod")) == (ns, name)}
        if pods <= seen:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


def run(cfg: LabConfig, shop: Path, say: Say) -> int:
    st = lab.current(cfg)
    tiers = tiers_dir()
    say("\n== 8. The administrator's step: an Admin tier ClusterNetworkPolicy keeps other namespaces off the databases")
    if not (tiers / ADMIN_POLICY).exists():
        say(f"   skipped: the tier policies are not in {tiers}; set STOCKADE_SOCK_SHOP_TIERS to their folder")
        return 0
    enforced = "brain" in st.processes
    _admin_step(cfg, st, tiers, enforced, say)
    _baseline_step(cfg, shop, tiers, enforced, say)
    return 0


def _admin_step(cfg: LabConfig, st: LabState, tiers: Path, enforced: bool, say: Say) -> None:
    say(
        "   The cluster's administrator, not the shop's team, decides that no namespace but sock-shop may\n"
        "   connect to the shop's databases. A Deny of the Admin tier comes before every NetworkPolicy and is\n"
        "   final. Then another team's namespace arrives (analytics, with its pod reports), and a NetworkPolicy\n"
        "   in sock-shop lets it in to orders and to orders-db."
    )
    kubectl = demo.kubectl
    kubectl(say, ["apply", "-f", demo.shown(tiers / ADMIN_POLICY)], ["get", "clusternetworkpolicies"])
    lab.apply(cfg, [str(tiers / ADMIN_POLICY)], True, say)
    kubectl(say, ["apply", "-f", demo.shown(tiers / OUTSIDERS)], ["apply", "-f", demo.shown(tiers / OUTSIDER_POLICY)])
    lab.apply(cfg, [str(tiers / OUTSIDERS), str(tiers / OUTSIDER_POLICY)], True, say)
    say(demo.flow_table(demo.check(lab.current(cfg), ADMIN_FLOWS), "these connections"))
    say("   Why orders-db stays blocked, from the brain:")
    if enforced:
        stockade(cfg, say, "explain", OUTSIDER, f"{demo.NS}/orders-db", "--port", "27017")
        if not _wait_outsider_drops(st, {db for db, _ in DATABASES}):
            say("   (not every drop is in Redis yet: the counts below may be short)")
        say(
            "   What was dropped, by the policy (or ClusterNetworkPolicy rule) that dropped it (the\n"
            "   NetworkPolicy rows are the drops of steps 3 and 4):"
        )
        stockade(cfg, say, *DROPS_TOP)
    else:
        say("  (no brain in this lab: nothing to ask)")


def _baseline_step(cfg: LabConfig, shop: Path, tiers: Path, enforced: bool, say: Say) -> None:
    kubectl = demo.kubectl
    say(
        "\n== 9. A Baseline tier ClusterNetworkPolicy as the shop's default deny, in place of the beta annotation\n"
        f"   ({demo.BETA_ANNOTATION}, an API Kubernetes removed long ago). The Baseline comes after the\n"
        "   NetworkPolicies: it decides only for a pod no NetworkPolicy selects. Put it in place, then remove the\n"
        "   annotation (the shop is never open in between)."
    )
    kubectl(say, ["apply", "-f", demo.shown(tiers / BASELINE_POLICY)])
    lab.apply(cfg, [str(tiers / BASELINE_POLICY)], True, say)
    kubectl(say, ["annotate", "namespace", demo.NS, f"{demo.BETA_ANNOTATION}-"])
    plain = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {demo.NS}\n"
    lab.apply(cfg, [demo.write_state_file(cfg, "demo-no-annotation.yaml", plain)], True, say)
    cortex = shop / "policies" / "netpol-cortex-access.yaml"
    say(
        "   The published cortex-access selects every pod of the shop (its podSelector is empty), so\n"
        "   NetworkPolicies decide for all of them and the Baseline for none. It admits a Cortex the shop does\n"
        "   not run (lint, step 7): delete it, and the pods no other policy selects (carts, with the typo;\n"
        "   session-db; queue-master) are left to the Baseline."
    )
    kubectl(say, ["delete", "-f", demo.shown(cortex)])
    lab.delete(cfg, [str(cortex)], True, say)
    flows = demo.check(lab.current(cfg))
    say(demo.flow_table(flows))
    say("   Who decided each blocked connection, from the brain:")
    if not enforced:
        say("  (no brain in this lab: nothing to ask)")
        return
    for f in [f for f in flows if not f.connected or f.expected is False]:
        stockade(cfg, say, "explain", f.src, f.dst, "--port", str(f.port))
