# The comparison's foreign keys now name the rounds app's models (issue 19): state only, the
# tables and their constraints are unchanged (see rounds 0001).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0004_label_flag"),
        ("rounds", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="comparison",
                    name="policy_version",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="rounds.modelversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="response_a",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="rounds.response",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="response_b",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="rounds.response",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="reward_version",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="rounds.modelversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="round",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="comparisons",
                        to="rounds.round",
                    ),
                ),
            ],
        ),
    ]
