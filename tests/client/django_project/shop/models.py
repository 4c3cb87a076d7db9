import uuid

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100, unique=True)
    joined = models.DateTimeField()
    vip = models.BooleanField(default=False)
    prefs = models.JSONField(default=dict)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.DecimalField(max_digits=12, decimal_places=2)
    placed = models.DateField()
    ref = models.UUIDField(default=uuid.uuid4, unique=True)
    note = models.CharField(max_length=200, default="", blank=True)
