"""kube-proxy's job, for the lab: Services reach their pods through nftables DNAT in every node.

* `objects` — Services, EndpointSlices and Nodes parsed and checked (pure)
* `render` — one node's ``inet stockade-kube-proxy`` table as one ``nft -f`` transaction (pure)
* `controller` — watches the API server, re-renders and applies per node on every change
* `routes` — the Service CIDR route each node needs for its own traffic to reach the hooks
* `status` — what the proxy has programmed, and waiting until it is in step with the API
* ``python -m stockade.lab.kubeproxy --dir STATE_DIR`` — the process the lab starts
"""
