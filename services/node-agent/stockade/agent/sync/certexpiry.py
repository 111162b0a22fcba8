"""``stockade_agent_certificate_expiry_seconds``: how long the agent's client certificate in use
stays valid, so an alert fires well before a renewal that never arrived breaks the handshake."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from stockade.agent.sync.client import AgentClient


class CertificateExpiry:
    """A collector reading the client's certificate source at scrape time."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        tls = self.client.tls
        if tls is None:
            return
        left = tls.seconds_left()
        if left is not None:
            yield GaugeMetricFamily(
                "stockade_agent_certificate_expiry_seconds",
                "Seconds until this agent's client certificate in use expires (negative once expired); "
                "renewed files are picked up without a restart.",
                value=left,
            )
        yield GaugeMetricFamily(
            "stockade_agent_certificate_renewals",
            "Reconnects this agent made to use renewed certificate files since it started.",
            value=self.client.renewals,
        )
