"""One server per anchor, each run by `python -m bench.anchors` in its own environment: the S4 net
behind that stack's own recommended way of serving a batched model (bench/anchors/contenders.py
says how each is started and configured, and why)."""
