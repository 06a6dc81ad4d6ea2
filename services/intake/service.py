"""The intake service: call-center intake and diagnosis; customers' personal data."""

from services.intake import importing, jobs
from services.intake.app import create_app
from shared.app.importing.tickets import TICKETS_KIND
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="intake",
    create_app=create_app,
    jobs=jobs.run_job,
    # Historical tickets enter where every ticket does; their steps are each service's.
    imports=(TICKETS_KIND,),
    history=(importing.HISTORY,),
)
