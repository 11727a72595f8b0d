"""The HTTP face of the service: one router per concern (predict, read, v2, feedback, model card,
health, metrics, admin, page), the pydantic models of every answer, the FastAPI dependencies, and
the one map from the pipeline's errors to status codes."""
