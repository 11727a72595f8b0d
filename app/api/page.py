"""GET /: the draw-a-digit page, and /static/: the files it needs (no CDN, no build step)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()
# Mounted on the router so that app/main.py needs a single include_router line for the page.
router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The page itself; it talks to the same POST /predict and GET /model as any client."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
