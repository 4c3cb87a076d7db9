"""Every test of SQLAlchemy's suite for third-party dialects."""

from sqlalchemy.testing.suite import *  # noqa: F403
