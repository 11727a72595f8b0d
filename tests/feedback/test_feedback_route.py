"""POST /feedback and GET /feedback/stats through the app (TestClient), on SQLite and PostgreSQL:
what is stored, repeats, numbers, every refusal, the token, `off`, the metric, retention."""

import hashlib
import io
import logging
import tarfile
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.feedback.idx import read_idx_pair
from app.feedback.store import TABLE, FeedbackStore, NewCorrection
from app.main import create_app
from app.settings import Settings
from training.numbers import compose


@pytest.fixture
def app_settings(reading_weights, database_url):
    def settings(**overrides) -> Settings:
        base = {"weights": reading_weights, "cpu_threads": 1, "database_url": database_url}
        return Settings(**(base | overrides))

    return settings


@pytest.fixture
def client(app_settings):
    with TestClient(create_app(app_settings())) as client:
        yield client


@pytest.fixture
def rows(database_url):
    """``rows()``: every stored record, oldest first, as dicts."""
    store = FeedbackStore(database_url)

    def read() -> list[dict]:
        with store.engine.connect() as connection:
            query = sa.select(TABLE).order_by(TABLE.c.id)
            return [dict(row._mapping) for row in connection.execute(query)]

    yield read
    store.close()


@pytest.fixture(scope="module")
def seven(mnist_test_set, encode_image) -> bytes:
    images, labels = mnist_test_set
    return encode_image(255 - images[int(np.flatnonzero(labels == 7)[0])])  # dark ink on white


def part(data: bytes, name: str = "digit.png") -> dict:
    return {"file": (name, data, "image/png")}


def test_a_digit_is_stored_in_mnist_form_with_what_was_read(client, rows, seven):
    predicted = client.post("/predict?return_input=true", files=part(seven)).json()
    response = client.post(
        "/feedback", files=part(seven), data={"digit": "1", "predicted": "7", "source": "test"}
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    [row] = rows()
    assert answer == {
        "ids": [row["id"]],
        "stored": 1,
        "label": "1",
        "read": "7",
        "weights_sha256": predicted["weights_sha256"],
    }
    assert row["sha256"] == hashlib.sha256(seven).hexdigest()
    assert (row["position"], row["label"], row["read_as"], row["predicted"]) == (0, 1, 7, 7)
    assert row["weights_sha256"] == predicted["weights_sha256"]
    assert row["source"] == "test" and row["original"] is None
    pixels = np.frombuffer(row["pixels"], np.uint8).reshape(28, 28)
    assert (pixels == np.array(predicted["predictions"][0]["model_input"])).all()
    assert abs(row["created_at"].replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)


def test_the_same_picture_and_label_again_is_stored_once(client, rows, seven):
    first = client.post("/feedback", files=part(seven), data={"digit": "7"}).json()
    again = client.post("/feedback", files=part(seven, "other-name.png"), data={"digit": "7"})
    assert again.status_code == 201
    assert again.json()["ids"] == first["ids"] and again.json()["stored"] == 0
    other = client.post("/feedback", files=part(seven), data={"digit": "9"}).json()
    assert other["stored"] == 1 and other["ids"] != first["ids"]
    assert len(rows()) == 2


def test_the_original_is_kept_only_when_asked(app_settings, rows, seven):
    with TestClient(create_app(app_settings(feedback_keep_originals=True))) as client:
        assert client.post("/feedback", files=part(seven), data={"digit": "7"}).status_code == 201
    assert rows()[0]["original"] == seven


def test_a_number_is_stored_as_one_record_per_digit(client, rows, mnist_test_set, encode_image):
    images, labels = mnist_test_set
    sample = compose(images, labels, 4, "wide", np.random.default_rng(5))
    picture = encode_image(sample.picture)
    read = client.post("/read", files=part(picture)).json()["numbers"][0]["text"]
    meant = "".join(str((int(c) + 1) % 10) for c in sample.text)  # every digit "misread"
    response = client.post(
        "/feedback", files=part(picture), data={"text": meant, "predicted": read}
    )
    assert response.status_code == 201, response.text
    assert response.json()["read"] == read and len(response.json()["ids"]) == 4
    stored = rows()
    assert [(r["position"], str(r["label"]), str(r["read_as"])) for r in stored] == [
        (i, meant[i], read[i]) for i in range(4)
    ]
    assert {r["sha256"] for r in stored} == {hashlib.sha256(picture).hexdigest()}
    short = client.post("/feedback", files=part(picture), data={"text": meant[:3]})
    assert short.status_code == 422
    assert "finds 4 digits" in short.json()["detail"] and "`text` has 3" in short.json()["detail"]
    assert len(rows()) == 4


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        ({}, 422, "no label"),
        ({"digit": "x"}, 422, "`digit` must be one digit"),
        ({"digit": "10"}, 422, "`digit` must be one digit"),
        ({"digit": "-1"}, 422, "`digit` must be one digit"),
        ({"digit": "٣"}, 422, "`digit` must be one digit"),  # a digit, but not 0-9
        ({"digit": "1", "text": "1"}, 422, "not both"),
        ({"text": "12a"}, 422, "`text` must be the number's digits"),
        ({"text": ""}, 422, "`text` must be the number's digits"),
        ({"digit": "1", "predicted": "seven"}, 422, "`predicted`"),
        ({"digit": "1", "source": "x" * 65}, 422, "`source` must be a short tag"),
        ({"digit": "1", "colour": "red"}, 422, "unexpected form field 'colour'"),
        ({"digit": "1" * 2000}, 422, "longer than 1024 bytes"),
    ],
)
def test_a_missing_or_invalid_label_is_a_clear_4xx(client, rows, seven, data, status, says):
    response = client.post("/feedback", files=part(seven), data=data)
    assert response.status_code == status
    assert says in response.json()["detail"]
    assert rows() == []


def test_the_picture_is_refused_as_predict_refuses_it(app_settings, rows, seven, encode_image):
    with TestClient(create_app(app_settings(max_image_bytes=len(seven) - 1))) as client:
        too_big = client.post("/feedback", files=part(seven), data={"digit": "7"})
        assert too_big.status_code == 413 and "S4_MAX_IMAGE_BYTES" in too_big.json()["detail"]
    with TestClient(create_app(app_settings())) as client:
        cases = [
            (
                {
                    "files": {"file": ("a.txt", b"not an image", "text/plain")},
                    "data": {"digit": "1"},
                },
                415,
            ),
            ({"data": {"digit": "1"}}, 415),  # form-urlencoded: no picture at all
            ({"content": seven, "headers": {"Content-Type": "image/png"}}, 415),
            (
                {"files": part(encode_image(np.zeros((28, 28), np.uint8))), "data": {"digit": "1"}},
                422,
            ),
            (
                {
                    "files": [("file", ("a.png", seven)), ("file", ("b.png", seven))],
                    "data": {"digit": "1"},
                },
                422,
            ),
            ({"files": {"other": ("a.png", seven)}, "data": {"digit": "1"}}, 422),
        ]
        for request, status in cases:
            response = client.post("/feedback", **request)
            assert response.status_code == status, (request.get("data"), response.text)
            assert response.json()["detail"]
        body = b'--b\r\nContent-Disposition: form-data; name="digit"\r\n\r\n1'
        broken = client.post(
            "/feedback", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
        )
        assert broken.status_code == 400
    assert rows() == []


def test_a_feedback_token_is_required_when_set(app_settings, seven):
    settings = app_settings(feedback_token="s3cret")
    with TestClient(create_app(settings)) as client:
        post = lambda **kw: client.post("/feedback", files=part(seven), data={"digit": "7"}, **kw)  # noqa: E731
        assert post().status_code == 401
        assert post(headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert post(headers={"Authorization": "Bearer s3cret"}).status_code == 201
        assert client.get("/feedback/stats").status_code == 200  # counts stay public


def test_feedback_off_removes_the_routes(app_settings, seven):
    with TestClient(create_app(app_settings(feedback=False))) as client:
        assert client.post("/feedback", files=part(seven), data={"digit": "7"}).status_code == 404
        assert client.get("/feedback/stats").status_code == 404
        assert client.post("/predict", files=part(seven)).status_code == 200


def test_stats_and_metrics_count_agreement(client, seven, mnist_test_set, encode_image):
    images, labels = mnist_test_set
    three = encode_image(images[int(np.flatnonzero(labels == 3)[0])])
    assert client.post("/feedback", files=part(seven), data={"digit": "1"}).status_code == 201
    assert client.post("/feedback", files=part(three), data={"digit": "3"}).status_code == 201
    client.post("/feedback", files=part(three), data={"digit": "3"})  # a repeat counts once
    stats = client.get("/feedback/stats").json()
    assert (stats["corrections"], stats["agreed"], stats["agreement_rate"]) == (2, 1, 0.5)
    [weights] = stats["by_weights"]
    assert weights["corrections"] == 2 and weights["agreement_rate"] == 0.5
    assert stats["confusion"][1][7] == 1 and stats["confusion"][3][3] == 1
    assert set(stats) == {"corrections", "agreed", "agreement_rate", "by_weights", "confusion"}
    metrics = client.get("/metrics").text
    assert 's4_feedback_total{agreed="true"} 1.0' in metrics
    assert 's4_feedback_total{agreed="false"} 1.0' in metrics


def test_pictures_are_never_logged(client, seven, caplog):
    with caplog.at_level(logging.DEBUG):
        response = client.post(
            "/feedback", files=part(seven, "secret-name.png"), data={"digit": "7"}
        )
        client.post("/feedback", files=part(seven, "secret-name.png"), data={"digit": "x"})
    assert response.status_code == 201
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "secret-name" not in logged and "PNG" not in logged
    assert hashlib.sha256(seven).hexdigest() not in logged


def test_retention_deletes_old_corrections_at_start_up(app_settings, database_url, rows):
    store = FeedbackStore(database_url)
    store.upgrade()
    pixels = bytes(784)
    for sha in ("a" * 64, "b" * 64):
        store.add([NewCorrection(sha, 0, 1, 1, None, "w" * 64, None, pixels, None)])
    with store.engine.begin() as connection:
        old = datetime.now(UTC) - timedelta(days=10)
        connection.execute(
            sa.update(TABLE).where(TABLE.c.sha256 == "a" * 64).values(created_at=old)
        )
    store.close()
    with TestClient(create_app(app_settings(feedback_retention_days=7))):
        deadline = time.monotonic() + 10
        while len(rows()) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [row["sha256"] for row in rows()] == ["b" * 64]


def test_the_http_export_needs_the_admin_token(app_settings, seven, tmp_path):
    with TestClient(create_app(app_settings())) as client:
        assert client.get("/admin/feedback/export").status_code == 404  # no admin token set
    with TestClient(create_app(app_settings(admin_token="adm1n"))) as client:
        client.post("/feedback", files=part(seven), data={"digit": "1"})
        assert client.get("/admin/feedback/export").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert client.get("/admin/feedback/export", headers=wrong).status_code == 403
        right = {"Authorization": "Bearer adm1n"}
        response = client.get("/admin/feedback/export", headers=right)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    pixels, labels = read_idx_pair(tmp_path)
    assert labels.tolist() == [1] and pixels.shape == (1, 28, 28)


def test_a_database_gone_after_start_up_is_a_503_not_a_500(reading_weights, tmp_path, seven):
    settings = Settings(weights=reading_weights, database_url=f"sqlite:///{tmp_path}/f.db")
    with TestClient(create_app(settings)) as client:
        client.app.state.feedback_store.close()
        # A server that is not there: every connection is refused.
        client.app.state.feedback_store = FeedbackStore("postgresql+psycopg://s4@127.0.0.1:1/x")
        posted = client.post("/feedback", files=part(seven), data={"digit": "7"})
        stats = client.get("/feedback/stats")
    for response in (posted, stats):
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "database is unavailable" in response.json()["detail"]
