# Moves Round, Response, ModelVersion and Evaluation from the campaigns app to the rounds app
# (issue 19). Their tables keep their names (db_table): Django's state changes, the database
# does not. campaigns 0006 removes them from the campaigns app's state.

import django.db.models.deletion
from django.db import migrations, models

MOVED = ["round", "response", "modelversion", "evaluation"]


def content_types_to(app_from, app_to):
    """Move the models' content types, so that permissions and admin log entries follow."""

    def move(apps, schema_editor):
        content_type = apps.get_model("contenttypes", "ContentType")
        taken = set(
            content_type.objects.filter(app_label=app_to, model__in=MOVED).values_list(
                "model", flat=True
            )
        )
        content_type.objects.filter(app_label=app_from, model__in=set(MOVED) - taken).update(
            app_label=app_to
        )

    return move


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("campaigns", "0005_invite"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="ModelVersion",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "kind",
                            models.CharField(
                                choices=[("policy", "Policy"), ("reward", "Reward model")],
                                max_length=8,
                            ),
                        ),
                        ("artifact_path", models.CharField(blank=True, max_length=500)),
                        ("metrics", models.JSONField(blank=True, default=dict)),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("pending", "Pending"),
                                    ("ready", "Ready"),
                                    ("failed", "Failed"),
                                ],
                                default="pending",
                                max_length=8,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "campaign",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="model_versions",
                                to="campaigns.campaign",
                            ),
                        ),
                        (
                            "parent",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                to="rounds.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "campaigns_modelversion",
                        "ordering": ["campaign", "kind", "id"],
                    },
                ),
                migrations.CreateModel(
                    name="Round",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("index", models.PositiveIntegerField()),
                        (
                            "state",
                            models.CharField(
                                choices=[
                                    ("generating", "Generating"),
                                    ("selecting", "Selecting"),
                                    ("labeling", "Labeling"),
                                    ("learning", "Learning"),
                                    ("evaluating", "Evaluating"),
                                    ("done", "Done"),
                                    ("failed", "Failed"),
                                ],
                                default="generating",
                                max_length=12,
                            ),
                        ),
                        ("deadline", models.DateTimeField(blank=True, null=True)),
                        ("failure_reason", models.TextField(blank=True)),
                        (
                            "transitions",
                            models.JSONField(
                                blank=True,
                                default=list,
                                help_text="[[state, ISO timestamp], ...] in order.",
                            ),
                        ),
                        ("claim_token", models.CharField(blank=True, max_length=64)),
                        ("claimed_at", models.DateTimeField(blank=True, null=True)),
                        ("attempts", models.PositiveIntegerField(default=0)),
                        (
                            "leftovers",
                            models.PositiveIntegerField(
                                default=0,
                                help_text="Comparisons still unlabeled when the round closed.",
                            ),
                        ),
                        ("started_at", models.DateTimeField(auto_now_add=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "campaign",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="rounds",
                                to="campaigns.campaign",
                            ),
                        ),
                        (
                            "policy_version",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="rounds.modelversion",
                            ),
                        ),
                        (
                            "reward_version",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="rounds.modelversion",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "campaigns_round",
                        "ordering": ["campaign", "index"],
                    },
                ),
                migrations.CreateModel(
                    name="Response",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("text", models.TextField()),
                        ("token_count", models.PositiveIntegerField(default=0)),
                        (
                            "features_key",
                            models.CharField(
                                blank=True,
                                help_text="Key of the cached backbone features (sha256).",
                                max_length=64,
                            ),
                        ),
                        (
                            "source",
                            models.CharField(
                                default="policy",
                                help_text="policy, imported, or a model name.",
                                max_length=32,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "policy_version",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="responses",
                                to="rounds.modelversion",
                            ),
                        ),
                        (
                            "prompt",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="responses",
                                to="campaigns.prompt",
                            ),
                        ),
                        (
                            "round",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="responses",
                                to="rounds.round",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "campaigns_response",
                        "ordering": ["id"],
                    },
                ),
                migrations.AddField(
                    model_name="modelversion",
                    name="round",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="produced_versions",
                        to="rounds.round",
                    ),
                ),
                migrations.CreateModel(
                    name="Evaluation",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("labels_spent", models.PositiveIntegerField()),
                        ("win_rate", models.FloatField()),
                        ("ci_low", models.FloatField()),
                        ("ci_high", models.FloatField()),
                        ("n_prompts", models.PositiveIntegerField()),
                        ("n_invalid", models.PositiveIntegerField(default=0)),
                        ("judge", models.CharField(max_length=100)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "campaign",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="evaluations",
                                to="campaigns.campaign",
                            ),
                        ),
                        (
                            "policy_version",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="evaluations",
                                to="rounds.modelversion",
                            ),
                        ),
                        (
                            "round",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="evaluations",
                                to="rounds.round",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "campaigns_evaluation",
                        "ordering": ["campaign", "labels_spent"],
                    },
                ),
                migrations.AddConstraint(
                    model_name="round",
                    constraint=models.UniqueConstraint(
                        fields=("campaign", "index"), name="round_index_unique"
                    ),
                ),
                migrations.AddConstraint(
                    model_name="round",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("state", "done"), _negated=True),
                        fields=("campaign",),
                        name="round_one_open_per_campaign",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="modelversion",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("artifact_path", ""), _negated=True),
                        fields=("campaign", "kind", "artifact_path"),
                        name="model_version_artifact_unique",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="modelversion",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("round__isnull", False)),
                        fields=("round", "kind"),
                        name="model_version_one_per_round_kind",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="evaluation",
                    constraint=models.UniqueConstraint(
                        fields=("round",), name="evaluation_one_per_round"
                    ),
                ),
            ],
        ),
        migrations.RunPython(
            content_types_to("campaigns", "rounds"), content_types_to("rounds", "campaigns")
        ),
    ]
