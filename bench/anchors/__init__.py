"""Ours and the serving stacks we compete with, side by side: `python -m bench.anchors`.

contenders (who is run, how, and the fairness notes), environments (each anchor's pinned
virtual environment under .cache/anchors/), reading (what every anchor's handler runs per image,
as ours does), servers/ (one server per anchor), runner (start, check, time with wrk, stop) and
report (the table).
"""

import warnings

# bench.serve's imports bring in Starlette's test client, which announces a move to httpx2.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
