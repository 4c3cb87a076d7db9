"""The node's own logic that needs no server: pages of database names."""

from __future__ import annotations

from shoal.node.node import select_page


def test_a_page_selects_names_without_looking_past_it() -> None:
    names = [f"db-{i:05d}" for i in range(10_000)]
    looked_at: list[str] = []

    def visible(name: str) -> bool:
        looked_at.append(name)
        return not name.endswith("7")

    page, following = select_page(names, "db-00100", 3, "", visible)
    assert page == ["db-00101", "db-00102", "db-00103"] and following == "db-00103"
    assert looked_at == ["db-00101", "db-00102", "db-00103", "db-00104"]
    assert select_page(names, "", 2, "0999", visible) == (["db-00999", "db-09990"], "db-09990")
    assert select_page(names, "db-09998", 5, "", visible) == (["db-09999"], None)
