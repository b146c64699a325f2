"""Wire models of the two API shapes the gateway speaks (requests, responses, error bodies)."""
