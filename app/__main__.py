"""``python -m app``: serve with uvicorn on the host and port from the settings.

Worker processes come from WEB_CONCURRENCY (uvicorn's own variable, default 1), the same variable
the settings divide the CPUs by for torch threads, so the two can never disagree.
"""

import uvicorn

from app.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


if __name__ == "__main__":
    main()
