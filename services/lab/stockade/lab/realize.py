"""Waiting until a change is enforced on every node, when several brains serve the nodes.

Every running brain is asked ``GET /v1/realized`` (with the lab's read token) at once, in short
rounds. The lab is realized when one brain says so for every node (brains that share their
agents' status through Redis know the nodes their peers serve), or else when each node is
realized on some brain that has seen the writes: the brain that serves it. A brain that is
down or frozen (a fault drill) is simply not counted.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stockade.lab import brains, state
from stockade.lab.state import LabState

ROUND = 1.0  # seconds each brain may wait per round: a brain that only knows its own nodes waits it out


def ask(port: int, token: str, since: dict[str, int], timeout: float) -> dict[str, Any]:
    """One brain's answer: its JSON body, or ``{"realized": False, "reason": ...}``."""
    kinds = "".join(f"&{k}={v}" for k, v in sorted(since.items()))
    url = f"http://127.0.0.1:{port}/v1/realized?timeout={timeout:.1f}{kinds}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout + 5) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as e:  # 504: not realized in time; the body says what is pending
        try:
            data = json.loads(e.read())
        except ValueError:
            data = {"realized": False, "reason": f"HTTP {e.code}"}
    except (OSError, ValueError) as e:
        data = {"realized": False, "reason": str(e), "unreachable": True}
    return data if isinstance(data, dict) else {"realized": False, "reason": "not a JSON object"}


def merge(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One answer from every brain's (brain name -> its answer)."""
    for name, a in answers.items():
        if a.get("realized"):
            return {**a, "brain": name}
    # A brain lists as pending every node it wants that has not acked it (or is not ready); the
    # brain serving a node leaves it out once done. Realized: no node pending on every brain. A
    # brain that has not seen the writes yet lists nothing: every node is pending there.
    listed = [set(a["pending"]) for a in answers.values() if isinstance(a.get("pending"), list)]
    if listed:
        pending = sorted(set.intersection(*listed))
        if not pending:
            return {"realized": True, "pending": [], "merged": sorted(answers)}
        reasons = [str(a["reason"]) for a in answers.values() if a.get("reason")]
        return {"realized": False, "pending": pending, **({"reason": "; ".join(reasons)} if reasons else {})}
    reasons = [f"{n}: {a.get('reason') or 'not realized'}" for n, a in sorted(answers.items()) if "pending" not in a]
    return {"realized": False, "reason": "; ".join(reasons) or "no brain answered"}


def wait(st: LabState, since: dict[str, int], timeout: float, state_dir: Path) -> dict[str, Any] | None:
    """Wait until the brains have seen each kind's last write (kind -> resourceVersion) and every
    node applied what followed. None when this lab has no brain."""
    every = [b for b in brains.of(st) if b.name in st.processes]
    if not every:
        return None
    try:
        token = str(json.loads((state_dir / "admin.json").read_text()).get("read_token", ""))
    except (OSError, ValueError) as e:
        return {"realized": False, "reason": f"cannot read the lab's admin token: {e}"}
    deadline = time.monotonic() + timeout
    answer: dict[str, Any] = {"realized": False, "reason": "no brain is running"}
    with ThreadPoolExecutor(max_workers=len(every)) as pool:
        while True:
            # The supervisor restarts a killed brain under a new pid: read it again every round
            # (with the state loaded once, a drill that killed every brain would wait in vain).
            try:
                st = state.load(state_dir / "state.json") or st
            except (OSError, ValueError):
                pass  # keep the last state read
            up = [b for b in every if brains.process_state(st, b) == "running"]
            left = max(0.1, deadline - time.monotonic())
            # One brain alone may wait all it likes; several wait in rounds, merged in between.
            each = left if len(up) == 1 else min(ROUND, left)
            futures = {b.name: pool.submit(ask, b.port(st, "http"), token, since, each) for b in up}
            answers = {name: f.result() for name, f in futures.items()}
            reachable = {n: a for n, a in answers.items() if not a.get("unreachable")}
            answer = merge(reachable or answers) if answers else answer
            if not reachable:  # none answers yet (starting, or all down): do not spin
                time.sleep(min(0.2, left))
            if answer.get("realized") or time.monotonic() >= deadline:
                return answer
