"""The explorer in a real browser (headless Chromium via Playwright) against a real testnet.

Every page renders the data PBFT committed, search lands on the right page, new blocks show up
without a reload (over the event stream, and by polling when the stream is cut), and the verify
view passes on a good ledger and names the bad height on a tampered one.

With LAYERCHAIN_SCREENSHOTS=1 the tests also refresh docs/screenshots/*.png.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from typing import Any

import httpx
import pytest
from explorer_activity import CURVE, RUN, Activity, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def cell_texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def test_home_shows_head_validators_blocks_and_jobs(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/")
    status = devnet.http.get("/api/v1/status").json()
    height = int(page.locator("#head-height").inner_text())
    assert height >= status["height"] > 10
    assert page.locator("#validators-up").inner_text().strip() == "4 / 4"
    assert page.locator("#view").inner_text().strip() == str(status["view"])
    rows = page.locator("#latest-blocks tbody tr")
    assert rows.count() == 10
    assert int(rows.first.get_attribute("data-height")) >= status["height"]
    jobs_html = page.locator("#latest-jobs").inner_html()
    assert devnet.jobs["expired"] in jobs_html and devnet.jobs["dag"] in jobs_html
    assert "tx/s" in page.locator("#tx-rate").inner_text()
    page.wait_for_selector("body[data-live-mode=stream]")
    screenshot(page, "home")


def test_blocks_page_pages_with_a_cursor(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/blocks?limit=5")
    first_page = [
        int(h)
        for h in page.locator("#latest-blocks tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.height)"
        )
    ]
    assert len(first_page) == 5 and first_page == sorted(first_page, reverse=True)
    page.click("#older")
    second_page = [
        int(h)
        for h in page.locator("#latest-blocks tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.height)"
        )
    ]
    assert second_page[0] == first_page[-1] - 1
    assert len(second_page) == 5


def test_block_page_checks_every_certificate_signature(page: Any, devnet: Activity) -> None:
    tx = devnet.wait_tx(devnet.txs["failed"])
    height = tx["height"]
    page.goto(f"{devnet.url}/blocks/{height}")
    assert page.locator("#block-hash").inner_text() == tx["block_hash"]
    header_text = page.locator("#header").inner_text()
    for field in ("chain_id", "prev_hash", "time_ms", "proposer", "view", "tx_root", "app_hash"):
        assert field in header_text
    assert "✗" not in header_text  # hash, parent link, tx root and count all check out
    assert "valid" in page.locator("#cert-verdict").inner_text()
    sigs = page.locator("#signatures tr.sig")
    assert sigs.count() >= devnet.net.genesis.quorum
    assert page.locator("#signatures tr.sig-valid").count() == sigs.count()
    assert devnet.txs["failed"][:8] in page.locator("#block-txs").inner_text()
    screenshot(page, "block")
    page.click("#parent-link")
    page.wait_for_url(re.compile(r"/blocks/[0-9a-f]{64}$"))
    assert page.locator("h1").inner_text() == f"Block {height - 1}"


def test_tx_page_shows_signer_signature_and_failure_reason(page: Any, devnet: Activity) -> None:
    page.goto(f"{devnet.url}/txs/{devnet.txs['failed']}")
    assert page.locator("#tx-hash").inner_text() == devnet.txs["failed"]
    text = page.locator("#tx").inner_text()
    assert devnet.miners[2].address in text
    assert "✓" in text  # signature verified on the server
    reason = page.locator("#failure-reason").inner_text()
    assert reason  # the receipt's failure message, e.g. insufficient funds
    assert '"type": "transfer"' in page.locator("#envelope").inner_text()
    screenshot(page, "tx")


def test_job_pages_tell_how_each_job_settled(page: Any, devnet: Activity) -> None:
    page.goto(f"{devnet.url}/jobs/{devnet.jobs['disputed']}")
    assert page.locator("#settlement").inner_text() == "reexecuted"
    assert "re-executed" in page.locator("#settle-story").inner_text()
    verdicts = cell_texts(page, "#results tr.result td:nth-child(5)")
    assert sorted(verdicts) == ["right", "wrong"]
    liar = devnet.miners[2].address
    assert liar[:8] in page.locator("#results").inner_text()
    assert page.locator("#outputs .shape").first.inner_text() == "4 × 2"
    href = page.locator("#outputs a.download").first.get_attribute("href")
    blob = httpx.get(devnet.url + href)
    assert blob.status_code == 200 and blob.headers["x-tensor-hash"] == href.rsplit("/", 1)[1]
    screenshot(page, "job")

    page.goto(f"{devnet.url}/jobs/{devnet.jobs['agreed']}")
    assert page.locator("#settlement").inner_text() == "agreed"
    assert sorted(cell_texts(page, "#results tr.result td:nth-child(5)")) == ["right", "right"]

    page.goto(f"{devnet.url}/jobs/{devnet.jobs['dag']}")
    page.click("#inputs a.dag-input")
    page.wait_for_url(f"**/jobs/{devnet.jobs['agreed']}")

    page.goto(f"{devnet.url}/jobs/{devnet.jobs['expired']}")
    assert "expired" in page.locator("#job-status").inner_text()


def test_miner_page_counts_and_csv_export(page: Any, devnet: Activity) -> None:
    liar = devnet.miners[2].address
    page.goto(f"{devnet.url}/accounts/{liar}")
    assert page.locator("#rejected").inner_text() == "1"
    assert int(page.locator("#accepted").inner_text()) == 1  # the DAG job
    assert int(page.locator("#slashed").inner_text().replace(",", "")) > 0
    assert int(page.locator("#reputation").inner_text()) < 1
    href = page.locator("#csv-export").get_attribute("href")
    response = page.request.get(devnet.url + href)
    assert response.ok and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert {r["job_id"]: r["verdict"] for r in rows} == {
        devnet.jobs["disputed"]: "wrong",
        devnet.jobs["dag"]: "right",
    }
    screenshot(page, "miner")


def test_validators_page_counts_proposed_signed_missed(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/validators")
    rows = page.locator("#validators tr.validator")
    assert rows.count() == 4
    proposed = [int(t.replace(",", "")) for t in cell_texts(page, "#validators td.proposed")]
    signed = [int(t.replace(",", "")) for t in cell_texts(page, "#validators td.signed")]
    missed = [int(t.replace(",", "")) for t in cell_texts(page, "#validators td.missed")]
    blocks = sum(proposed)
    assert blocks >= devnet.head() - 2  # counted up to the head when the page rendered
    assert all(s + m == blocks for s, m in zip(signed, missed, strict=True))
    assert sum(signed) >= devnet.net.genesis.quorum * blocks
    screenshot(page, "validators")


def test_run_page_draws_curves_and_lists_checkpoints(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/runs")
    page.click(f"text={RUN}")
    page.wait_for_url(f"**/runs/{RUN}")
    charts = page.locator("#charts svg.chart")
    assert charts.count() == 2  # loss, accuracy
    points = page.locator("#charts polyline").first.get_attribute("points")
    assert len(points.split()) == len(CURVE)
    assert page.locator("#checkpoints tbody tr").count() == len(CURVE)
    assert f"--run {RUN}" in page.locator("#replay-command").inner_text()
    screenshot(page, "run")


@pytest.mark.parametrize("kind", ["height", "block", "tx", "job", "address", "run"])
def test_search_lands_on_the_right_page(page: Any, devnet: Activity, kind: str) -> None:
    tx = devnet.wait_tx(devnet.txs["transfer"])
    query, expected = {
        "height": (str(tx["height"]), f"/blocks/{tx['height']}"),
        "block": (tx["block_hash"], f"/blocks/{tx['height']}"),
        "tx": (devnet.txs["transfer"], f"/txs/{devnet.txs['transfer']}"),
        "job": (devnet.jobs["dag"], f"/jobs/{devnet.jobs['dag']}"),
        "address": (devnet.miners[0].address, f"/accounts/{devnet.miners[0].address}"),
        "run": (RUN, f"/runs/{RUN}"),
    }[kind]
    page.goto(devnet.url + "/")
    page.fill("#search-input", query)
    page.press("#search-input", "Enter")
    page.wait_for_url(f"**{expected}")


def test_search_says_when_nothing_matches(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/search?q=" + "ab" * 32)
    assert "Nothing found" in page.locator("#search-miss").inner_text()


def test_new_block_appears_live_over_the_event_stream(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/")
    page.wait_for_selector("body[data-live-mode=stream]")
    _, height = devnet.new_block()
    page.wait_for_selector(f"#latest-blocks tr[data-height='{height}']")
    assert int(page.locator("#head-height").inner_text()) >= height


def test_new_block_appears_by_polling_when_the_stream_drops(page: Any, devnet: Activity) -> None:
    page.route("**/api/v1/events", lambda route: route.abort())
    page.goto(devnet.url + "/blocks")
    page.wait_for_selector("body[data-live-mode=polling]")
    _, height = devnet.new_block()
    page.wait_for_selector(f"#latest-blocks tr[data-height='{height}']", timeout=10_000)


def test_verify_view_passes_on_the_good_ledger(page: Any, devnet: Activity) -> None:
    page.goto(devnet.url + "/verify")
    page.click("#verify-button")
    page.wait_for_selector("#verify-result")
    verdict = page.locator("#verify-verdict").inner_text()
    assert verdict.startswith("✓") and "verified" in verdict
    screenshot(page, "verify")


def test_verify_view_names_the_tampered_height(page: Any, devnet: Activity) -> None:
    """Rewrite a reported loss in a committed checkpoint in node 3's database (dropping the
    append-only trigger first, as an attacker with the file would), restart it, ask its explorer."""
    net = devnet.net
    tx = devnet.wait_tx(devnet.txs["checkpoint2"])
    net.stop(3)
    db = net.home(3) / "data" / "ledger.db"
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER txs_no_update")
    body = conn.execute(
        "SELECT body FROM txs WHERE height = ? AND idx = ?", (tx["height"], tx["index"])
    ).fetchone()[0]
    forged = body.replace(f'"loss_ppm":{CURVE[2][0]}', '"loss_ppm":102000')
    assert forged != body
    conn.execute(
        "UPDATE txs SET body = ? WHERE height = ? AND idx = ?", (forged, tx["height"], tx["index"])
    )
    conn.commit()
    conn.close()
    net.start(3)
    net.wait_healthy([3], timeout=60)
    head = int(httpx.get(net.url(3) + "/api/v1/status").json()["height"])
    page.goto(f"{net.url(3)}/verify?from=1&to={head}")
    verdict = page.locator("#verify-verdict").inner_text()
    assert "First bad height" in verdict
    assert page.locator("#bad-height").inner_text() == str(tx["height"])
    assert page.locator("#verify-problem").inner_text()
    screenshot(page, "verify-tampered")


def test_view_change_shows_the_new_primary_and_the_down_validator(
    page: Any, devnet: Activity
) -> None:
    """Kill the primary of view 0 (node 0); once the others changed view and committed a block,
    node 1's explorer shows the new view, its primary, and node 0 unreachable. Runs last: the
    testnet keeps going without node 0."""
    net = devnet.net
    primary = net.genesis.validators[0].address
    assert devnet.http.get("/api/v1/validators").json()["primary"] == primary
    net.kill(0)
    other = Activity(net, node=1)
    other.nonces = devnet.nonces
    _, height = other.new_block()
    page.goto(net.url(1) + "/validators")
    assert int(page.locator("#view").inner_text()) >= 1
    row0 = page.locator("#validators tr.validator").nth(0)
    assert "down" in row0.inner_text()
    new_primary = page.locator("#validators tr.validator", has_text="primary")
    assert new_primary.count() == 1 and "node0" not in new_primary.inner_text()
    page.goto(net.url(1) + "/")
    assert int(page.locator("#view").inner_text()) >= 1
    assert int(page.locator("#head-height").inner_text()) >= height
    page.goto(f"{net.url(1)}/blocks/{height}")
    assert "node0" not in page.locator("#header tr", has_text="proposer").inner_text()
