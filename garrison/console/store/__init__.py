"""All SQL of the console lives in this package (SQLAlchemy 2 Core), one module per kind of record."""
