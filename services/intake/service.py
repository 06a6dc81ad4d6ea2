"""The intake service: call-center intake and diagnosis."""

from services.intake.app import create_app
from shared.app.service import ServiceModule

SERVICE = ServiceModule(name="intake", create_app=create_app)
