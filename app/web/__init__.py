"""The browser app: HTML pages and the sign-in/sign-out form posts. Pages call the same /v1 REST API
from the browser (cookie auth + CSRF header); `create_app()` includes `router`."""
from app.web.pages import router

__all__ = ["router"]
