"""What shoal's dialect supports, for SQLAlchemy's suite.

SuiteRequirements closes every optional feature; this opens the ones SQLite has
(shoal runs SQLite 3.54 through APSW) and keeps closed, with the reason, the ones
shoal does not give. docs/sqlalchemy.md lists every closed one and why.
"""

from sqlalchemy.testing import exclusions
from sqlalchemy.testing.requirements import SuiteRequirements

OPEN = exclusions.open


def _closed(reason: str) -> exclusions.compound:
    return exclusions.skip_if(lambda config: True, reason)


class Requirements(SuiteRequirements):
    # -- SQLite features the suite leaves closed by default ------------------------
    create_table_as = property(lambda self: OPEN())
    table_ddl_if_exists = property(lambda self: OPEN())
    index_ddl_if_exists = property(lambda self: OPEN())
    boolean_col_expressions = property(lambda self: OPEN())
    nullsordering = property(lambda self: OPEN())
    intersect = property(lambda self: OPEN())
    except_ = property(lambda self: OPEN())
    window_functions = property(lambda self: OPEN())
    window_range = property(lambda self: OPEN())
    window_range_numeric = property(lambda self: OPEN())
    ctes = property(lambda self: OPEN())
    ctes_with_update_delete = property(lambda self: OPEN())
    ctes_with_values = property(lambda self: OPEN())
    tuple_in = property(lambda self: OPEN())
    dbapi_lastrowid = property(lambda self: OPEN())
    views = property(lambda self: OPEN())
    reflects_pk_names = property(lambda self: OPEN())
    foreign_key_constraint_option_reflection_ondelete = property(lambda self: OPEN())
    fk_constraint_option_reflection_ondelete_restrict = property(lambda self: OPEN())
    fk_constraint_option_reflection_ondelete_noaction = property(lambda self: OPEN())
    foreign_key_constraint_option_reflection_onupdate = property(lambda self: OPEN())
    fk_constraint_option_reflection_onupdate_restrict = property(lambda self: OPEN())
    indexes_with_expressions = property(lambda self: OPEN())
    inline_check_constraint_reflection = property(lambda self: OPEN())
    check_constraint_reflection = property(lambda self: OPEN())
    unicode_ddl = property(lambda self: OPEN())
    timestamp_microseconds = property(lambda self: OPEN())
    datetime_historic = property(lambda self: OPEN())
    date_historic = property(lambda self: OPEN())
    isolation_level = property(lambda self: OPEN())
    autocommit = property(lambda self: OPEN())
    skip_autocommit_rollback = property(lambda self: OPEN())
    json_type = property(lambda self: OPEN())
    server_defaults = property(lambda self: OPEN())
    expression_server_defaults = property(lambda self: OPEN())
    infinity_floats = property(lambda self: OPEN())
    savepoints = property(lambda self: OPEN())
    update_from = property(lambda self: OPEN())
    mod_operator_as_percent_sign = property(lambda self: OPEN())
    order_by_label_with_expression = property(lambda self: OPEN())
    computed_columns = property(lambda self: OPEN())
    computed_columns_stored = property(lambda self: OPEN())
    computed_columns_virtual = property(lambda self: OPEN())
    reflect_table_options = property(lambda self: OPEN())
    supports_bitwise_or = property(lambda self: OPEN())
    supports_bitwise_and = property(lambda self: OPEN())
    supports_bitwise_not = property(lambda self: OPEN())
    supports_bitwise_shift = property(lambda self: OPEN())

    def get_isolation_levels(self, config):
        return {"default": "SERIALIZABLE", "supported": ["SERIALIZABLE", "AUTOCOMMIT"]}

    computed_columns_reflect_persisted = property(lambda self: OPEN())

    # -- what SQLite itself does not do --------------------------------------------
    implicitly_named_constraints = property(
        lambda self: _closed("SQLite gives no name to a constraint created without one")
    )
    parens_in_union_contained_select_w_limit_offset = property(
        lambda self: _closed("SQLite refuses a parenthesized SELECT inside a UNION")
    )
    parens_in_union_contained_select_wo_limit_offset = property(
        lambda self: _closed("SQLite refuses a parenthesized SELECT inside a UNION")
    )

    # -- what shoal does not give --------------------------------------------------
    regexp_match = property(
        lambda self: exclusions.skip_if(
            lambda config: config.db.url.drivername.startswith("shoal+http"),
            "REGEXP is a Python function on each connection; a node runs the SQL in "
            "its own process, which has none",
        )
    )
    temp_table_reflection = property(
        lambda self: _closed(
            "temporary tables belong to the connection that writes; shoal reads on "
            "other connections, which do not see them"
        )
    )
