"""``python -m stockade.lab.kubeproxy --dir STATE_DIR``: the lab's kube-proxy, for every node.

It reads the nodes' namespaces from the state file and the API server from the lab's
kubeconfig, then programs each node (see `controller`) until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from stockade.lab import state
from stockade.lab.kubeproxy import routes
from stockade.lab.kubeproxy.controller import KINDS, STATUS_FILE, Proxy, forget_in


async def main(state_dir: Path) -> None:
    from stockade.agent.backends.nftlib import NftRunner
    from stockade.brain.sources import Sources, api_client

    st = state.load(state_dir / "state.json")
    if st is None or st.plan is None:
        raise SystemExit(f"no lab state in {state_dir}")
    nodes = {n.name: n.netns for n in st.plan.nodes}
    for netns in nodes.values():
        routes.ensure(netns)
    proxy = Proxy(nodes, NftRunner, state_dir / STATUS_FILE, forget_in)
    client = await api_client(str(state_dir / "kubeconfig"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(proxy.run(Sources(client, proxy.on_event, kinds=KINDS)))
    try:
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
    finally:
        task.cancel()
        await client.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True, type=Path, help="the lab's state dir")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(a.dir))
