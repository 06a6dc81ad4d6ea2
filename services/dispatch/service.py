"""The dispatch service: the service network, assignment, visit, repair, SLA clocks."""

from services.dispatch import jobs, reactors
from services.dispatch.app import create_app
from services.dispatch.projections import PROJECTIONS
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="dispatch",
    create_app=create_app,
    projections=PROJECTIONS,
    reactors=reactors.reactors,
    jobs=jobs.run_job,
)
