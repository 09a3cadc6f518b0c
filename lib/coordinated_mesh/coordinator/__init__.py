"""The coordinator of a coordinated-worker cluster (see :class:`Coordinator`)."""

from coordinated_mesh.coordinator.coordinator import Coordinator

__all__ = ["Coordinator"]
