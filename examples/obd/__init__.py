"""The Open Bandit Dataset's small sample (uniform-random logging, men's campaign) as a ranking system."""
