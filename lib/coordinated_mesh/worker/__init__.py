"""A worker of a coordinated-worker cluster (see :class:`Worker`)."""

from coordinated_mesh.worker.worker import Worker, WorkerContext

__all__ = ["Worker", "WorkerContext"]
