"""Django's own test runner on shoal: a test database made, migrated, each test
rolled back, then destroyed."""

import datetime

from django.db import IntegrityError, transaction
from django.test import TestCase

from shop.models import Customer


class CustomerTests(TestCase):
    def test_a_customer_is_saved_and_found(self) -> None:
        joined = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)
        Customer.objects.create(name="carol", joined=joined)
        self.assertEqual(Customer.objects.get(joined__year=2024).name, "carol")

    def test_each_test_starts_empty_and_names_are_unique(self) -> None:
        self.assertEqual(Customer.objects.count(), 0)
        joined = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)
        Customer.objects.create(name="dave", joined=joined)
        with self.assertRaises(IntegrityError), transaction.atomic():
            Customer.objects.create(name="dave", joined=joined)
