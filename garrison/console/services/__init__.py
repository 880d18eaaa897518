"""Console logic between the thin API routers and the SQL store."""
