"""Prometheus metrics and structured request logs.

Each app gets its own registry (not prometheus-client's global one), so several apps in one
process (the test suite) never collide. With several uvicorn workers, each worker reports its own
numbers; scrape each worker, or run one worker per container.
"""

import logging
import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_LOG = logging.getLogger("s4.requests")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
FORWARD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """Every metric the service exports, registered in the app's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["method", "path", "status"]
        # Each label set's two series, looked up once (labels() costs more than the update):
        # one entry per series the registry keeps anyway (paths are route templates).
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "s4_http_requests",
            "HTTP requests answered, by method, route and status code.",
            labels,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "s4_http_request_duration_seconds",
            "Time from request to the end of the response, by method, route and status code.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images_predicted = Counter(
            "s4_images_predicted", "Images answered with a digit.", registry=self.registry
        )
        self.predictions = Counter(
            "s4_predictions", "Predicted digits, by digit.", ["digit"], registry=self.registry
        )
        # Looked up once: labels() costs more than the increment, and it runs for every image.
        self._digit_counters = [self.predictions.labels(digit=str(digit)) for digit in range(10)]
        self.request_images = Histogram(
            "s4_request_images",
            "Images per successful /predict or v2 infer request.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.forward_batch_images = Histogram(
            "s4_forward_batch_images",
            "Images per forward pass, after concurrent requests were batched together.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.forward_seconds = Histogram(
            "s4_forward_seconds",
            "Time one forward pass took on the device.",
            buckets=FORWARD_BUCKETS,
            registry=self.registry,
        )
        self.numbers_read = Counter(
            "s4_numbers_read", "Pictures answered with a number by /read.", registry=self.registry
        )
        self.number_digits = Histogram(
            "s4_number_digits",
            "Digits per number read by /read.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.feedback = Counter(
            "s4_feedback",
            "Corrected digits stored by POST /feedback, by whether the served weights read them "
            "as meant.",
            ["agreed"],
            registry=self.registry,
        )
        self._feedback_counters = {
            agreed: self.feedback.labels(agreed=str(agreed).lower()) for agreed in (True, False)
        }
        self.model_load_seconds = Gauge(
            "s4_model_load_seconds",
            "Time to load, verify and warm up the weights at start-up.",
            registry=self.registry,
        )

    def record_predictions(self, digits: list[int]) -> None:
        self.request_images.observe(len(digits))
        self.images_predicted.inc(len(digits))
        for digit in digits:
            self._digit_counters[digit].inc()

    def record_numbers(self, lengths: list[int]) -> None:
        """One /read request's numbers, by how many digits each has."""
        self.numbers_read.inc(len(lengths))
        for length in lengths:
            self.number_digits.observe(length)

    def record_feedback(self, agreed: list[bool]) -> None:
        """One correction's newly stored digits, each read as meant or not."""
        for each in agreed:
            self._feedback_counters[each].inc()

    def record_request(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        if key not in self._request_series:
            labels = {"method": method, "path": path, "status": str(status)}
            self._request_series[key] = (
                self.requests.labels(**labels),
                self.request_seconds.labels(**labels),
            )
        count, duration = self._request_series[key]
        count.inc()
        duration.observe(seconds)


def configure_request_log() -> None:
    """Send request logs to stderr as one JSON object per line, unless logging is set up already."""
    if not REQUEST_LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        REQUEST_LOG.addHandler(handler)
        REQUEST_LOG.setLevel(logging.INFO)


class RequestTelemetryMiddleware:
    """Times every HTTP request; records it in the metrics and logs it as one JSON line.

    A plain ASGI middleware: it only watches the response start for the status code, so bodies
    stream through untouched, and request bodies (images) never reach the log. Routes are
    labelled by their template (``/predict``), and unmatched paths share one label, so a scanner
    cannot blow up the number of time series.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before starting a response, the server answers 500

        async def send_watching_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_watching_status)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "<unmatched>")
            self.metrics.record_request(scope["method"], path, status, seconds)
            REQUEST_LOG.info(
                orjson.dumps(
                    {
                        "event": "request",
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000.0, 3),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                ).decode()
            )
