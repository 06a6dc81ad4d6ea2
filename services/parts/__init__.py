"""Parts: spare-part stock, requisitions, old-part returns, replenishment."""
