"""Controllers the lab's API server runs in its own process (kube-controller-manager's part)."""

from .endpointslices import EndpointSliceController

__all__ = ["EndpointSliceController"]
