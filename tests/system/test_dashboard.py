"""The dashboard at /ui, in a real browser (Debian's Chromium under Playwright)
against a real `shoal serve`: databases appear as they are created, pages and
search, the SQL console on one database and on many, and the node's auth."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from shoal.node.auth import TokenStore
from tests.harness import Cluster, Node
from tests.system.conftest import StartNode


def create(url: str, name: str, headers: dict[str, str] | None = None) -> None:
    response = httpx.post(f"{url}/v1/databases", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text


def names_shown(page: Page) -> list[str]:
    return page.locator("#databases tbody tr td:first-child").all_inner_texts()


@pytest.fixture
def page(browser: Browser) -> Page:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def test_a_new_database_shows_and_its_console_runs_a_query(node: Node, page: Page) -> None:
    create(node.url, "tenant-a")
    page.goto(f"{node.url}/ui")
    expect(page.locator("#node")).to_contain_text("ready")
    expect(page.locator("#databases")).to_contain_text("tenant-a")
    create(node.url, "tenant-b")  # after the page loaded: live updates bring it
    expect(page.locator("#databases")).to_contain_text("tenant-b", timeout=6000)

    page.get_by_role("link", name="tenant-a").click()
    expect(page.locator("#database")).to_have_value("tenant-a")
    page.fill("#sql", "SELECT 40 + 2 AS answer, '<b>not html</b>' AS text")
    page.click("#run")
    expect(page.locator("#result thead")).to_contain_text("answer")
    expect(page.locator("#result tbody")).to_contain_text("42")
    expect(page.locator("#result tbody")).to_contain_text("<b>not html</b>")  # as text
    expect(page.locator("#run-status")).to_contain_text("1 row(s)")

    page.check('input[name="target"][value="many"]')
    page.fill("#database", "*")
    page.fill("#sql", "SELECT count(*) AS n FROM sqlite_schema")
    page.fill("#aggregate", "SELECT count(*) AS databases FROM results")
    page.click("#run")
    expect(page.locator("#result thead")).to_contain_text("databases")
    expect(page.locator("#result tbody")).to_have_text("3")  # default, tenant-a, tenant-b

    page.fill("#aggregate", "")
    page.fill("#sql", "SELECT * FROM no_such_table")
    page.click("#run")
    expect(page.locator("#result-errors")).to_contain_text("no such table: no_such_table")
    expect(page.locator("#run-status")).to_contain_text("3 database(s) failed")


def test_databases_page_and_search(node: Node, page: Page) -> None:
    for i in range(60):
        create(node.url, f"t-{i:02d}")
    page.goto(f"{node.url}/ui")
    expect(page.locator("#page")).to_contain_text("from default")
    assert len(names_shown(page)) == 50
    page.click("#next")
    expect(page.locator("#page")).to_contain_text("(last page)")
    assert names_shown(page) == [f"t-{i:02d}" for i in range(49, 60)]
    page.click("#first")
    expect(page.locator("#page")).to_contain_text("from default")
    page.fill("#search", "t-5")
    expect(page.locator("#databases tbody tr")).to_have_count(10)
    assert names_shown(page) == [f"t-5{i}" for i in range(10)]


def test_behind_the_nodes_auth(start_node: StartNode, browser: Browser, tmp_path: Path) -> None:
    data = tmp_path / "secured"
    store = TokenStore(data)
    secret = store.create("viewer", "read", ("*",))
    admin = store.create("admin", "admin", ("*",))
    store.close()
    node = start_node(data_dir=data)
    create(node.url, "app", headers={"Authorization": f"Bearer {admin}"})

    refused = httpx.get(f"{node.url}/ui", headers={"Authorization": "Bearer shoal_wrong"})
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]

    context = browser.new_context(http_credentials={"username": "me", "password": secret})
    page = context.new_page()
    response = page.goto(f"{node.url}/ui")
    assert response is not None and response.status == 200
    expect(page.locator("#databases")).to_contain_text("app")
    expect(page.locator("#problem")).to_be_hidden()
    context.close()

    wrong = browser.new_context(http_credentials={"username": "me", "password": "shoal_nope"})
    response = wrong.new_page().goto(f"{node.url}/ui")
    assert response is not None and response.status == 401
    assert re.search("Unauthorized", response.text())
    wrong.close()


def test_a_cluster_shows_its_nodes_leaders_and_copies(cluster: Cluster, page: Page) -> None:
    create(cluster["n1"].url, "orders")
    leader = cluster.leader("orders")
    cluster.wait_converged("orders", copies=3)
    page.goto(f"{cluster['n2'].url}/ui")
    for node_id in ("n1", "n2", "n3"):
        expect(page.locator("#nodes")).to_contain_text(node_id)
    row = page.locator("#databases tbody tr", has_text="orders")
    expect(row).to_contain_text(leader)
    expect(row).to_contain_text("sync")
    expect(row.locator("td").nth(3)).to_have_text(re.compile(r"n1 v\d+ \(0\), n2 .*, n3 "))
    # What the page polls: the nodes alone, without a log-head read per database.
    url = cluster["n2"].url
    nodes_only = httpx.get(f"{url}/v1/cluster", params={"databases": "false"}).json()
    assert nodes_only["databases"] == [] and len(nodes_only["nodes"]) == 3
    everything = httpx.get(f"{url}/v1/cluster").json()
    assert "orders" in [d["name"] for d in everything["databases"]]
