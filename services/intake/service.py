"""The intake service: call-center intake and diagnosis; customers' personal data."""

from services.intake import jobs
from services.intake.app import create_app
from shared.app.service import ServiceModule

SERVICE = ServiceModule(name="intake", create_app=create_app, jobs=jobs.run_job)
