"""Data shipped with lossfn: ``sample.csv``, made by ``make_sample.py`` (seeded)."""
