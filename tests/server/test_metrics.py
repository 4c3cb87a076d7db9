"""The Prometheus text: counters by route and status, and cumulative histograms."""

from __future__ import annotations

from starlette.testclient import TestClient

from shoal.server.metrics import Metrics


def test_histogram_buckets_are_cumulative(api: TestClient) -> None:
    metrics = Metrics()
    for seconds in (0.0001, 0.003, 0.003, 20.0):
        metrics.observe("POST", "/q", 200, seconds)
    metrics.observe("POST", "/q", 400, 0.2)
    text = metrics.render(api.app.state.node, 0)  # type: ignore[attr-defined]
    line = 'shoal_http_request_duration_seconds_bucket{method="POST",route="/q",le="%s"} %d'
    assert line % ("0.0005", 1) in text
    assert line % ("0.005", 3) in text
    assert line % ("0.25", 4) in text
    assert line % ("10.0", 4) in text
    assert line % ("+Inf", 5) in text
    assert 'shoal_http_requests_total{method="POST",route="/q",status="400"} 1' in text
    assert 'shoal_http_request_duration_seconds_count{method="POST",route="/q"} 5' in text
