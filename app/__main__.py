"""``python -m app``: serve with uvicorn on the host, port and worker count from the settings.

The worker count is read as WEB_CONCURRENCY (uvicorn's own variable) by the settings, which also
derive each worker's CPU threads (S4_CPU_THREADS) from it, so the two can never disagree.
"""

import uvicorn

from app.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        access_log=False,  # every request is logged once, as JSON, by app.metrics
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


if __name__ == "__main__":
    main()
