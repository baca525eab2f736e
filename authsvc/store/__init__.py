"""Storage: the engine, the SQLAlchemy models and the repositories. All SQL lives here."""
