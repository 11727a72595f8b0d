"""The image's HEALTHCHECK: exit 0 when GET /health on this container's port answers 200.

The slim base image has no curl; Python is already there. The port comes from the service's own
settings, so a container started with another S4_PORT is still checked where it listens.
"""

import sys
import urllib.request

from app.settings import get_settings

TIMEOUT_S = 2


def main() -> int:
    url = f"http://127.0.0.1:{get_settings().port}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
