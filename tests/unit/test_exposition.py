"""The Prometheus text builder and parser shared by every service's /metrics."""

from __future__ import annotations

from hadrlab.exposition import CONTENT_TYPE, Histogram, MetricsText, parse_metrics


def test_families_and_samples_render_in_the_text_format():
    text = MetricsText()
    text.family("api_requests_total", "counter", "HTTP requests answered, by path and status.")
    text.sample("api_requests_total", 3, path="/predict", status=200)
    text.sample("api_requests_total", 1, path="/predict", **{"class": "4xx"})
    text.family("api_ready", "gauge", "1 when ready.").sample("api_ready", 1)
    assert text.render() == (
        "# HELP api_requests_total HTTP requests answered, by path and status.\n"
        "# TYPE api_requests_total counter\n"
        'api_requests_total{path="/predict",status="200"} 3\n'
        'api_requests_total{path="/predict",class="4xx"} 1\n'
        "# HELP api_ready 1 when ready.\n"
        "# TYPE api_ready gauge\n"
        "api_ready 1\n"
    )


def test_label_values_escape_quotes_backslashes_and_newlines():
    line = MetricsText().sample("m", 1, detail='say "hi"\\\n').render()
    assert line == 'm{detail="say \\"hi\\"\\\\\\n"} 1\n'


def test_a_histogram_counts_cumulatively_and_renders_every_bucket():
    latency = Histogram((0.01, 0.1))
    for seconds in (0.005, 0.05, 2.0):
        latency.observe(seconds)
    assert latency.counts == [1, 2] and latency.count == 3
    body = MetricsText().histogram("lat_seconds", "Time to answer.", latency).render()
    assert body.splitlines() == [
        "# HELP lat_seconds Time to answer.",
        "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="0.01"} 1',
        'lat_seconds_bucket{le="0.1"} 2',
        'lat_seconds_bucket{le="+Inf"} 3',
        "lat_seconds_sum 2.055000",
        "lat_seconds_count 3",
    ]


def test_parse_metrics_reads_back_what_the_builder_wrote():
    latency = Histogram((1.0,))
    latency.observe(0.5)
    text = MetricsText().family("up", "gauge", "Up.").sample("up", 1, region="a")
    samples = parse_metrics(text.histogram("lat", "Latency.", latency).render())
    assert samples == {'up{region="a"}': 1.0, 'lat_bucket{le="1"}': 1.0, 'lat_bucket{le="+Inf"}': 1.0,
                       "lat_sum": 0.5, "lat_count": 1.0}


def test_the_content_type_names_the_format_version():
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_serving_still_offers_parse_metrics():
    from hadrlab import serving

    assert serving.parse_metrics is parse_metrics
