"""EXAMPLE ONLY: creates the superuser ``admin`` with the password ``admin``.

So that the admin of the example site can be tried at once. Delete this migration before you
start a real site from this project, and create your superuser with ``manage.py createsuperuser``.
"""

from django.db import migrations

USERNAME = "admin"
PASSWORD = "admin"


def create_admin(apps, schema_editor):
    user_model = apps.get_model("auth", "User")
    manager = user_model.objects.db_manager(schema_editor.connection.alias)
    if not manager.filter(username=USERNAME).exists():
        manager.create_superuser(USERNAME, email="", password=PASSWORD)


class Migration(migrations.Migration):
    dependencies = [
        ("notes", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_admin, migrations.RunPython.noop)]
