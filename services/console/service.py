"""The operations console: read-only pages for headquarters and the regional centers."""

from services.console.app import create_app
from shared.app.service import ServiceModule

SERVICE = ServiceModule(name="console", create_app=create_app)
