"""The lab daemon: serves every pod's ports and relays agents to the brain, from one process.

``python -m stockade.lab.labd --dir STATE_DIR``. It reads the state file at start and on
SIGHUP (after `lab apply` or `lab delete` changed the pods), serves what is new, closes what is
gone, then writes the state's serial to ``labd.ready`` so the CLI knows it is serving.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from stockade.lab import podserver, relay, state

log = logging.getLogger("stockade.lab.labd")


class Daemon:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.pods: dict[str, podserver.PodServers] = {}
        self.relays: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self.sctp = podserver.sctp_supported()
        self.lock = asyncio.Lock()

    async def reload(self) -> None:
        async with self.lock:
            st = state.load(self.dir / "state.json")
            if st is None or st.plan is None:
                log.warning("no state file in %s", self.dir)
                return
            wanted = {p.key: p for p in st.plan.pods}
            for key in set(self.pods) - set(wanted):
                self.pods.pop(key).close()
            for key, pod in wanted.items():
                if key not in self.pods:
                    self.pods[key] = await podserver.serve_pod(pod, self.sctp)
            for node in st.plan.nodes:
                for port in st.relays:
                    if (node.netns, port) not in self.relays:
                        self.relays[node.netns, port] = await relay.relay(node.netns, port)
            (self.dir / "labd.ready").write_text(str(st.serial))
            log.info("serving %d pods (serial %d)", len(self.pods), st.serial)


async def main(state_dir: Path) -> None:
    d = Daemon(state_dir)
    if not d.sctp:
        log.warning("SCTP is not available in this kernel: SCTP ports are not served")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(d.reload()))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await d.reload()
    await stop.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True, type=Path)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(a.dir))
