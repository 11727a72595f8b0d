"""S4 Digits: a FastAPI service that reads handwritten digits with the S4 net."""
