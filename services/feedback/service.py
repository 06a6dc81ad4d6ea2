"""The feedback service: follow-ups, complaints, compliance, scorecards, quality."""

from services.feedback import jobs
from services.feedback.app import create_app
from services.feedback.projections import PROJECTIONS
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="feedback", create_app=create_app, projections=PROJECTIONS, jobs=jobs.run_job
)
