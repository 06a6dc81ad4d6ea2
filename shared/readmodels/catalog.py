"""The projections the common package itself provides."""

from shared.readmodels.ticket_state import TicketStateProjection

PROJECTIONS = (TicketStateProjection(),)
