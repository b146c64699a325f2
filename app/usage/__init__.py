"""What each team spent and saved: prices, the usage ledger, budgets, and the usage and costs reports."""
