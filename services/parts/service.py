"""The parts service: catalogue, stock, requisitions, old-part returns, replenishment."""

from services.parts import jobs, reactors
from services.parts.app import create_app
from services.parts.projections import PROJECTIONS
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="parts",
    create_app=create_app,
    projections=PROJECTIONS,
    reactors=reactors.reactors,
    jobs=jobs.run_job,
)
