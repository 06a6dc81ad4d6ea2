"""The dispatch service: the service network, assignment, visit, repair, SLA clocks."""

from services.dispatch import importing, jobs, reactors
from services.dispatch.app import create_app
from services.dispatch.projections import NETWORK, PROJECTIONS, TICKET_FLAGS
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="dispatch",
    create_app=create_app,
    projections=PROJECTIONS,
    # Read your own writes: the network after a member's command, the flags after the SLA
    # clock or the repeat-repair reactor recorded one.
    inline={"service_point": (NETWORK,), "technician": (NETWORK,), "ticket": (TICKET_FLAGS,)},
    reactors=reactors.reactors,
    jobs=jobs.run_job,
    imports=importing.KINDS,
    history=(importing.HISTORY,),
)
