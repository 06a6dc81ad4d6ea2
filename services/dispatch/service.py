"""The dispatch service: the service network, assignment, visit, repair, SLA clocks."""

from services.dispatch import importing, jobs, reactors
from services.dispatch.app import create_app
from services.dispatch.projections import (
    NETWORK,
    PROJECTIONS,
    SLA_CLOCKS,
    SLA_TERMS,
    TICKET_FLAGS,
)
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="dispatch",
    create_app=create_app,
    projections=PROJECTIONS,
    # Read your own writes: the network after a member's command, the flags and the SLA
    # clock after a pause, the SLA job or the repeat-repair reactor recorded something, the
    # calendars and policies after their definitions.
    inline={
        "service_point": (NETWORK,),
        "technician": (NETWORK,),
        "ticket": (TICKET_FLAGS, SLA_CLOCKS),
        "calendar": (SLA_TERMS,),
        "sla_policy": (SLA_TERMS,),
    },
    reactors=reactors.reactors,
    jobs=jobs.run_job,
    imports=importing.KINDS,
    history=(importing.HISTORY,),
)
