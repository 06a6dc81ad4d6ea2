"""Feedback: return visit, satisfaction, reopen and close; compliance views."""
