from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list = []  # noqa: RUF012 - Django reads these class attributes

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Note",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("title", models.CharField(max_length=200)),
                ("body", models.TextField(blank=True)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
