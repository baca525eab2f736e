"""Domain services: the rules. They take a database session and `now`, and only flush."""
