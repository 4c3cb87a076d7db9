"""A Django project on shoal, for tests/client/test_django.py and
tests/system/test_django.py: SHOP_DB names the file, SHOP_REPLICA_OF (if set)
makes it an embedded replica of that node's database."""

import os

SECRET_KEY = "only-for-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "shop"]
DATABASES = {
    "default": {
        "ENGINE": "shoal.client.django",
        "NAME": os.environ["SHOP_DB"],
        "OPTIONS": {"replica_of": os.environ["SHOP_REPLICA_OF"]}
        if os.environ.get("SHOP_REPLICA_OF")
        else {},
    }
}
