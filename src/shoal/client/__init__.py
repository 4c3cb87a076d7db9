"""Clients: the DB-API 2.0 connection, embedded (in-process) and, later, remote."""
