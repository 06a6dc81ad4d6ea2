"""The parts service: catalogue, stock, requisitions, old-part returns, replenishment."""

from services.parts import importing, jobs, reactors
from services.parts.app import create_app
from services.parts.projections import CATALOGUE, PROJECTIONS, REQUISITIONS, RETURNS, STOCK
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="parts",
    create_app=create_app,
    projections=PROJECTIONS,
    # Kept in the command's transaction (callers read their own writes), by stream type:
    # the returns read model also follows the old-part events on the ticket stream.
    inline={
        "part": (CATALOGUE,),
        "location": (CATALOGUE,),
        "stock": (STOCK,),
        "requisition": (REQUISITIONS, RETURNS),
        "ticket": (RETURNS,),
    },
    reactors=reactors.reactors,
    jobs=jobs.run_job,
    imports=importing.KINDS,
)
