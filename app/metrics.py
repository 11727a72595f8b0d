"""Prometheus metrics and structured request logs.

Each app gets its own registry (not prometheus-client's global one), so several apps in one
process (the test suite) never collide. With several uvicorn workers, each worker reports its own
numbers; scrape each worker, or run one worker per container.
"""

import logging

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import Scope

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
        # By weights version (app/versions.py): what a canary is judged on.
        self.version_requests = Counter(
            "s4_version_requests",
            "Requests answered with digits, by weights version and protocol.",
            ["version", "protocol"],
            registry=self.registry,
        )
        self.version_request_seconds = Histogram(
            "s4_version_request_duration_seconds",
            "Time to answer a request with digits, by weights version.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.version_predictions = Counter(
            "s4_version_predictions",
            "Predicted digits, by weights version and digit.",
            ["version", "digit"],
            registry=self.registry,
        )
        self._version_series: dict[tuple, tuple[Counter, Histogram, list[Counter]]] = {}
        self.grpc_requests = Counter(
            "s4_grpc_requests",
            "gRPC calls answered, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.grpc_request_seconds = Histogram(
            "s4_grpc_request_duration_seconds",
            "Time from a gRPC call to its answer, by method and status code.",
            ["method", "code"],
            buckets=LATENCY_BUCKETS,
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

    def record_version(
        self, version: str, protocol: str, seconds: float, digits: list[int]
    ) -> None:
        """One answered request's version, protocol, latency and digits."""
        key = (version, protocol)
        if key not in self._version_series:
            self._version_series[key] = (
                self.version_requests.labels(version=version, protocol=protocol),
                self.version_request_seconds.labels(version=version),
                [self.version_predictions.labels(version=version, digit=str(d)) for d in range(10)],
            )
        requests, duration, digit_counters = self._version_series[key]
        requests.inc()
        duration.observe(seconds)
        for digit in digits:
            digit_counters[digit].inc()

    def record_grpc(self, method: str, code: str, seconds: float) -> None:
        self.grpc_requests.labels(method=method, code=code).inc()
        self.grpc_request_seconds.labels(method=method, code=code).observe(seconds)

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


def record_request(metrics: Metrics, scope: Scope, status: int, seconds: float) -> None:
    """One answered HTTP request: into the metrics, and into the request log as one JSON line.

    Routes are labelled by their template (``/predict``), and unmatched paths share one label, so
    a scanner cannot blow up the number of time series. Request bodies (images) never reach the
    log.
    """
    route = scope.get("route")
    metrics.record_request(scope["method"], getattr(route, "path", "<unmatched>"), status, seconds)
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
