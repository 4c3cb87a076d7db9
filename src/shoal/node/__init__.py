"""A node: the databases it holds (opened on demand, closed when idle), the thread
pools that call into them, its lifecycle, its cluster membership, its archiving,
its settings and its tokens. The HTTP layer (shoal.server) serves it."""

from shoal.node.node import DatabaseInfo, Node

__all__ = ["DatabaseInfo", "Node"]
