"""consent: clients, API keys, the consent ledger and the decision engine."""
