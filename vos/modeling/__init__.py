"""SAM 2 / SAM 2.1 building blocks, one module per component of the paper."""
