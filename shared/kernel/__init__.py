"""Pure domain code shared by every service: events, ticket state, lifecycle, errors."""
