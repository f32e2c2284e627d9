import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [("tenants", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="Release",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("period", models.CharField(max_length=6)),
                ("k", models.PositiveSmallIntegerField()),
                ("epsilon", models.FloatField()),
                ("payload", models.JSONField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"db_table": "federation_releases", "ordering": ["-created_at", "-pk"]},
        ),
        migrations.CreateModel(
            name="FederationMembership",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("opted_in", models.BooleanField(default=False)),
                ("industry", models.CharField(blank=True, max_length=32, choices=[
                    ("software", "Software and SaaS"), ("financial_services", "Financial services"),
                    ("healthcare", "Healthcare"), ("retail", "Retail and e-commerce"),
                    ("manufacturing", "Manufacturing"), ("media", "Media and entertainment"),
                    ("education", "Education"), ("public_sector", "Public sector"), ("other", "Other")])),
                ("opted_in_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("tenant", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE,
                                                related_name="federation", to="tenants.tenant")),
            ],
            options={"db_table": "federation_memberships", "abstract": False,
                     "base_manager_name": "dangerously_all_tenants", "default_manager_name": "objects"},
            managers=[("objects", django.db.models.manager.Manager()),
                      ("dangerously_all_tenants", django.db.models.manager.Manager())],
        ),
    ]
