# Round, Response, ModelVersion and Evaluation leave the campaigns app's state (issue 19):
# rounds 0001 added them to the rounds app's, on the same tables. State only: no table is
# dropped, and the campaign's active versions keep their columns and constraints.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0005_invite"),
        ("labeling", "0005_round_models_in_rounds_app"),
        ("rounds", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name="evaluation",
                    name="campaign",
                ),
                migrations.RemoveField(
                    model_name="evaluation",
                    name="policy_version",
                ),
                migrations.RemoveField(
                    model_name="evaluation",
                    name="round",
                ),
                migrations.RemoveField(
                    model_name="modelversion",
                    name="campaign",
                ),
                migrations.RemoveField(
                    model_name="modelversion",
                    name="parent",
                ),
                migrations.RemoveField(
                    model_name="modelversion",
                    name="round",
                ),
                migrations.RemoveField(
                    model_name="round",
                    name="reward_version",
                ),
                migrations.RemoveField(
                    model_name="response",
                    name="policy_version",
                ),
                migrations.AlterField(
                    model_name="campaign",
                    name="active_policy_version",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="rounds.modelversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="campaign",
                    name="active_reward_version",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="rounds.modelversion",
                    ),
                ),
                migrations.RemoveField(
                    model_name="round",
                    name="policy_version",
                ),
                migrations.RemoveField(
                    model_name="response",
                    name="prompt",
                ),
                migrations.RemoveField(
                    model_name="response",
                    name="round",
                ),
                migrations.RemoveField(
                    model_name="round",
                    name="campaign",
                ),
                migrations.DeleteModel(
                    name="Evaluation",
                ),
                migrations.DeleteModel(
                    name="ModelVersion",
                ),
                migrations.DeleteModel(
                    name="Response",
                ),
                migrations.DeleteModel(
                    name="Round",
                ),
            ],
        ),
    ]
