"""What a failover storm costs with token identity: N agents reconnect to a brain at once (their
brain went away), each with a token that brain has not seen, so each needs one TokenReview.

The lab API server runs in a child process (as a real API server is another process), with N
agent pods; their tokens come from its TokenRequest. The brain's `TokenAuthenticator` (real
kubernetes-asyncio client, its default concurrency) then verifies all N at once (cold), and all
N again (warm: the cache). Prints the time of each and the cold storm's ratio to the target: every
agent accepted again within 2 s (issue 13 item 4's failover bound).

Run: .venv/bin/python benchmarks/token_reviews.py [N]   (default 1000)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from stockade.brain.sources import api_client
from stockade.brain.tokenauth import TokenAuthenticator

TARGET_S = 2.0
NS, SA, AUD = "stockade-system", "stockade-agent", "stockade"


def cluster(n: int) -> list[dict[str, object]]:
    objs: list[dict[str, object]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}]
    for i in range(n):
        objs.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{i}"}})
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"agent-{i}", "namespace": NS},
                "spec": {"nodeName": f"node-{i}", "hostNetwork": True, "containers": [{"name": "a"}]},
            }
        )
    return objs


async def mint(url: str, n: int) -> list[str]:
    async with aiohttp.ClientSession(base_url=url) as http:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> str:
            body = {"spec": {"audiences": [AUD], "expirationSeconds": 3600,
                             "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": f"agent-{i}"}}}  # fmt: skip
            async with sem, http.post(f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token", json=body) as r:
                return str((await r.json())["status"]["token"])

        return await asyncio.gather(*(one(i) for i in range(n)))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="st-tokbench-") as tmp:
        data, kc = Path(tmp) / "cluster.yaml", Path(tmp) / "kubeconfig"
        data.write_text(yaml.safe_dump_all(cluster(n)))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stockade.lab.apiserver",
                "--port",
                "0",
                "--data",
                str(data),
                "--kubeconfig",
                str(kc),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            while not kc.exists():
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            url = yaml.safe_load(kc.read_text())["clusters"][0]["cluster"]["server"]
            tokens = await mint(url, n)
            client = await api_client(str(kc))
            try:
                auth = TokenAuthenticator(client, audience=AUD, service_accounts=[f"{NS}:{SA}"])
                t0 = time.perf_counter()
                cold = await asyncio.gather(*(auth.verify(t) for t in tokens))
                t_cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                await asyncio.gather(*(auth.verify(t) for t in tokens))
                t_warm = time.perf_counter() - t0
            finally:
                await client.close()
            assert [c.node for c in cold] == [f"node-{i}" for i in range(n)]
            print(
                json.dumps(
                    {
                        "agents": n,
                        "cold_storm_s": round(t_cold, 3),
                        "reviews": auth.reviews,
                        "reviews_per_s": round(n / t_cold),
                        "warm_s": round(t_warm, 4),
                        "target_s": TARGET_S,
                        "ratio_to_target": round(t_cold / TARGET_S, 2),
                    }
                )
            )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
