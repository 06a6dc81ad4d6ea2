"""The projections the common package itself provides."""

from shared.projections.ticket_state import TicketStateProjection

PROJECTIONS = (TicketStateProjection(),)
