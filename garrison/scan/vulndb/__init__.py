"""Local OSV vulnerability database: import (OSV JSON/YAML, osv.dev zips, RubySec YAML), index, match."""
