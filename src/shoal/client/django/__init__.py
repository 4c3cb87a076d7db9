"""Django's database backend for shoal: `"ENGINE": "shoal.client.django"`.

Django loads `base.DatabaseWrapper` from here; docs/sqlalchemy.md shows the settings.
"""
