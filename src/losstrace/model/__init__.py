"""Model construction (zoo) and pre-flight checks (lint)."""
