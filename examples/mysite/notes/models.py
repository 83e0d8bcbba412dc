"""The one model of the example: a short note."""

from django.db import models


class Note(models.Model):
    text = models.TextField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.text if len(self.text) <= 60 else f"{self.text[:57]}..."
