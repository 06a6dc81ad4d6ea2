"""The feedback service: follow-ups, complaints, compliance, scorecards, quality."""

from services.feedback import importing, jobs
from services.feedback.app import create_app
from services.feedback.projections import (
    COMPLIANCE,
    PROJECTIONS,
    QUALITY_ALERTS,
    SCORECARD_ITEMS,
)
from shared.app.service import ServiceModule

SERVICE = ServiceModule(
    name="feedback",
    create_app=create_app,
    projections=PROJECTIONS,
    # Applied in the service's own command transactions, so its callers read their
    # writes: the compliance row of the tickets it follows up or takes complaints on,
    # the manual scorecard items, the quality alerts its job raises.
    inline={
        "ticket": (COMPLIANCE,),
        "scorecard": (SCORECARD_ITEMS,),
        "quality": (QUALITY_ALERTS,),
    },
    jobs=jobs.run_job,
    history=(importing.HISTORY,),
)
