"""SQLAlchemy's pytest plugin, which runs its dialect suite against --dburi, and the
provisioning hooks for URLs whose backend is `shoal`: SQLite's, less the schema
SQLAlchemy's SQLite hooks ATTACH (shoal refuses ATTACH)."""

import pytest
from sqlalchemy.testing import provision

pytest.register_assert_rewrite("sqlalchemy.testing.assertions")

from sqlalchemy.testing.plugin.pytestplugin import *  # noqa: E402, F403


@provision.generate_driver_url.for_db("shoal")
def _the_url_as_given(url, driver, query_str):
    return url


@provision.temp_table_keyword_args.for_db("shoal")
def _temporary(cfg, eng):
    return {"prefixes": ["TEMPORARY"]}


@provision.upsert.for_db("shoal")
def _upsert(cfg, table, returning, *, set_lambda=None, sort_by_parameter_order=False, **kw):
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(table)
    if set_lambda:
        stmt = stmt.on_conflict_do_update(set_=set_lambda(stmt.excluded))
    else:
        stmt = stmt.on_conflict_do_nothing()
    return stmt.returning(*returning, sort_by_parameter_order=sort_by_parameter_order)


def _not_for_shoal(cls: str, name: str) -> str | None:
    """Why a test of the suite cannot pass on shoal whatever its requirements say."""
    schema = (
        "uses the schema test_schema without asking the requirements; SQLite gets it by "
        "ATTACH, which shoal refuses"
    )
    if cls.startswith("ComponentReflectionTestExtra") and "[True" in name:
        return schema
    if name.startswith("test_metadata[") and name.endswith("-True]"):
        return schema
    if name == "test_dialect_user_setting_is_restored":
        return "needs two isolation levels besides AUTOCOMMIT; SQLite runs one (SERIALIZABLE)"
    return None


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        reason = _not_for_shoal(item.cls.__name__ if item.cls else "", item.name)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"not for shoal: {reason}"))
