"""What an application does with Django's ORM, checked step by step on whatever
settings.py points at (a file, or a replica of a node's database). It prints
"exercised" when every check holds; run after `django migrate`."""

import datetime
import decimal
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.db import IntegrityError, connection, transaction  # noqa: E402
from django.db.models import Count, F, StdDev, Sum  # noqa: E402
from django.db.models.functions import TruncMonth  # noqa: E402
from shop.models import Customer, Order  # noqa: E402

UTC = datetime.UTC
on_replica = bool(os.environ.get("SHOP_REPLICA_OF"))


def check(held: bool, what: str) -> None:
    if not held:
        sys.exit(f"failed: {what}")


assert connection.vendor == "sqlite" and connection.display_name == "shoal"
alice = Customer.objects.create(
    name="alice", joined=datetime.datetime(2024, 3, 1, 12, 30, tzinfo=UTC), prefs={"lang": "en"}
)
bob = Customer.objects.create(
    name="bob", joined=datetime.datetime(2025, 7, 9, 8, 0, tzinfo=UTC), vip=True
)
Order.objects.bulk_create(
    [
        Order(customer=alice, total=decimal.Decimal("10.50"), placed=datetime.date(2024, 5, 1)),
        Order(customer=alice, total=decimal.Decimal("4.25"), placed=datetime.date(2024, 5, 20)),
        Order(customer=bob, total=decimal.Decimal("99.99"), placed=datetime.date(2025, 8, 1)),
    ]
)

# Values come back as the types the fields declare.
found = Customer.objects.get(name="alice")
check(found.joined == alice.joined and found.prefs == {"lang": "en"}, "datetime and JSON")
check(Customer.objects.get(name="bob").vip is True, "boolean")
first = Order.objects.order_by("id").first()
check(first is not None and first.total == decimal.Decimal("10.50"), "decimal")
check(first is not None and first.placed == datetime.date(2024, 5, 1), "date")

# Lookups and aggregates that call Django's Python functions, in this process.
check(Customer.objects.filter(joined__month=3).get() == alice, "__month (django_date_extract)")
check(Order.objects.filter(placed__week_day=4).count() == 1, "__week_day")
months = Order.objects.annotate(month=TruncMonth("placed")).values("month").annotate(n=Count("id"))
check(sorted(m["n"] for m in months) == [1, 2], "TruncMonth (django_date_trunc)")
totals = Order.objects.aggregate(sum=Sum("total"), spread=StdDev("total"))
check(totals["sum"] == decimal.Decimal("114.74"), f"Sum: {totals}")
check(round(float(totals["spread"]), 2) == 43.73, f"StdDev (an aggregate in Python): {totals}")
check(Customer.objects.get(prefs__lang="en") == alice, "a JSON lookup")
by_customer = dict(
    Customer.objects.annotate(n=Count("orders")).values_list("name", "n").order_by("name")
)
check(by_customer == {"alice": 2, "bob": 1}, f"a join with GROUP BY: {by_customer}")

# Writes: F() expressions, and transactions with savepoints.
Order.objects.filter(customer=alice).update(total=F("total") + 1)
check(
    Order.objects.filter(customer=alice).aggregate(s=Sum("total"))["s"] == decimal.Decimal("16.75"),
    "UPDATE with F()",
)
with transaction.atomic():
    Order.objects.create(customer=bob, total=1, placed=datetime.date(2025, 9, 1))
    try:
        with transaction.atomic():  # a savepoint
            Customer.objects.create(name="alice", joined=alice.joined)
    except IntegrityError:
        pass  # the savepoint is rolled back, the outer transaction goes on
    else:
        check(False, "a duplicate name raises IntegrityError")
check(Order.objects.filter(customer=bob).count() == 2, "the outer transaction committed")
try:
    with transaction.atomic():
        Order.objects.create(customer_id=9999, total=1, placed=datetime.date(2025, 1, 1))
except IntegrityError:
    pass  # Django's foreign keys are deferred: checked at COMMIT
else:
    check(False, "a dangling foreign key raises IntegrityError at commit")
check(Order.objects.count() == 4, "the failed transaction left nothing")
bob.delete()  # cascades to bob's orders
check(Order.objects.count() == 2 and Customer.objects.count() == 1, "delete cascades")

# Introspection sees the application's tables only.
tables = connection.introspection.table_names()
check("shop_order" in tables and not any(t.startswith("_shoal_") for t in tables), str(tables))

if on_replica:
    # On a replica a transaction runs on the node, which has no Python functions.
    try:
        with transaction.atomic():
            Customer.objects.filter(joined__month=3).count()
    except django.db.utils.ProgrammingError as exc:
        check("no such function: django_datetime_extract" in str(exc), str(exc))
    else:
        check(False, "a Django function inside a transaction on a replica is refused")
    check(connection.connection.version >= 1, "the replica's version")

print("exercised")
