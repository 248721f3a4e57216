"""Data: the official file contract (`nextdest.data.official`) and the synthetic generator
(`nextdest.data.synthetic`) that writes the same files."""
