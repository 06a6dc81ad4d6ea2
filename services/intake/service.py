"""The intake service: call-center intake and diagnosis."""

from services.intake import importing
from services.intake.app import create_app
from shared.app.importing.tickets import TICKETS_KIND
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="intake",
    create_app=create_app,
    # Historical tickets enter where every ticket does; their steps are each service's.
    imports=(TICKETS_KIND,),
    history=(importing.HISTORY,),
)
